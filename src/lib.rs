//! ferrosmtp's codec: the byte work of SMTP (RFC 5321) with no I/O and no clocks.
//!
//! - [`framing`]: `ServerReader`, CRLF framing of commands, DATA unstuffing that ends only
//!   at CRLF.CRLF, BDAT chunks, AUTH lines, and every smuggling-class decision;
//! - [`command`], [`address`], [`params`]: command tokenizing, RFC 5321 paths, ESMTP
//!   parameters and xtext;
//! - [`reply`]: the client's `ReplyReader`, `format_reply`, EHLO capabilities;
//! - [`dotstuff`]: the DATA and BDAT wire forms of a body;
//! - [`envelope`]: the client's MAIL FROM and RCPT TO lines, checked and formatted.
//!
//! [`fastpath`] goes one step past the codec: the hot loop of a server session whose
//! application answers nothing itself (a sink), taking only what the Python state machine
//! (`ferrosmtp.protocol.ServerConnection`) would accept, with its replies, and stopping
//! before anything else; the time it keeps (the idle timeout's progress) is given to it.
//!
//! One module is not codec: [`syncer`], the relay spool's fsync thread, in Rust because it
//! must run without Python's GIL. It is built for POSIX systems only (the relay, its one
//! user, needs POSIX file locking); elsewhere `ferrosmtp.codec.Syncer` is the pure one.
//!
//! `python/ferrosmtp/_pure/` is the same codec in plain Python, the specification these
//! modules are differentially tested against. [`python`] holds the PyO3 bindings only.

#![forbid(unsafe_code)]

pub mod address;
pub mod command;
pub mod dotstuff;
pub mod envelope;
pub mod error;
pub mod fastpath;
pub mod framing;
pub mod params;
pub mod reply;
mod scan;
#[cfg(unix)]
pub mod syncer;

#[cfg(feature = "python")]
mod python;

pub use address::{parse_path, Path};
pub use command::{parse_command, Command};
pub use dotstuff::{dot_stuff, wire_form, DotStuffer};
pub use envelope::{format_envelope, EnvelopeError};
pub use error::CodecError;
pub use framing::{DataEnd, Item, Mode, ReaderConfig, ServerReader, Violation};
pub use params::{parse_params, xtext_decode, xtext_encode};
pub use reply::{format_reply, parse_ehlo, EhloReply, Reply, ReplyReader};
