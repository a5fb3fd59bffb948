//! The part of a server session that needs nothing from the application, run without it.
//!
//! `ServerConnection` (python/ferrosmtp/protocol/server.py) is the one authority on what
//! a server answers; this is its hot loop for the case where the application answers no
//! event itself (a sink: no hook for HELO/EHLO, MAIL, RCPT, the message, RSET, NOOP or QUIT).
//! It takes only what that state machine would accept and answer by default, with the
//! same replies, and stops at the first item it does not take, before changing anything
//! for it: every refusal, limit and other command stays the state machine's, which goes
//! on from the state handed back ([`FastPath::take_over`]). The differential tests hold
//! a connection run this way to the same bytes as one run by the state machine alone;
//! `python/ferrosmtp/_pure/fastpath.py` is the same code in Python.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::address::Path;
use crate::command::Command;
use crate::framing::{DataEnd, Item, ServerReader};

/// The bytes of each reply the fast path gives, formatted by the state machine.
pub struct Replies {
    pub hello: Vec<u8>,
    pub ehlo: Vec<u8>,
    pub mail: Vec<u8>,
    pub rcpt: Vec<u8>,
    pub data: Vec<u8>,
    pub message: Vec<u8>,
    pub reset: Vec<u8>,
    pub noop: Vec<u8>,
    pub quit: Vec<u8>,
}

/// The state machine's limits that apply to the commands taken here.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_recipients: usize,
    pub max_junk_commands: u64,
    pub strict_pipelining: bool,
    /// The connection is TLS already: a first byte 0x16 is not a misplaced handshake.
    pub tls: bool,
    /// The idle timeout's rule: message content is progress at this many octets a second.
    pub data_min_rate: Option<f64>,
}

/// The session where the fast path stopped, for the state machine to go on from.
pub struct State {
    pub hello: Option<&'static str>,
    pub hello_name: Option<String>,
    pub mail: Option<Path>,
    pub recipients: Vec<Path>,
    pub in_data: bool,
    pub junk: u64,
    /// It answered QUIT: the connection closes.
    pub closed: bool,
    /// Replies given and not yet returned.
    pub replies: Vec<u8>,
    /// Items read and not taken, in order.
    pub items: Vec<Item>,
    /// Input given to `receive` and not fed to the reader.
    pub unread: Vec<u8>,
    pub received_any: bool,
    pub last_progress: f64,
    pub data_started: Option<f64>,
    pub data_bytes: u64,
}

pub const STOPPED: &str = "the fast path has stopped: take_over()";

pub struct FastPath {
    // Shared by every session made with `fresh`: a configuration's replies are made once.
    replies: Arc<Replies>,
    limits: Limits,
    hello: Option<&'static str>,
    hello_name: Option<String>,
    mail: Option<Path>,
    recipients: Vec<Path>,
    in_data: bool,
    junk: u64,
    closed: bool,
    out: Vec<u8>,
    items: VecDeque<Item>,
    unread: Vec<u8>,
    received_any: bool,
    last_progress: f64,
    data_started: Option<f64>,
    data_bytes: u64,
    stopped: bool,
}

/// What taking one item was: an event of the state machine's (progress), or not (DATA,
/// whose 354 is the connection's own).
#[derive(PartialEq)]
enum Taken {
    Event,
    Quiet,
}

impl FastPath {
    pub fn new(replies: Replies, limits: Limits, now: f64) -> Self {
        Self::with(Arc::new(replies), limits, now)
    }

    /// A new session's fast path with this one's replies and limits (none of its state).
    pub fn fresh(&self, now: f64) -> Self {
        Self::with(Arc::clone(&self.replies), self.limits, now)
    }

    fn with(replies: Arc<Replies>, limits: Limits, now: f64) -> Self {
        FastPath {
            replies,
            limits,
            hello: None,
            hello_name: None,
            mail: None,
            recipients: Vec::new(),
            in_data: false,
            junk: 0,
            closed: false,
            out: Vec::new(),
            items: VecDeque::new(),
            unread: Vec::new(),
            received_any: false,
            last_progress: now,
            data_started: None,
            data_bytes: 0,
            stopped: false,
        }
    }

    pub fn last_progress(&self) -> f64 {
        self.last_progress
    }

    /// It answered QUIT.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Feed `data` (read at `now`) and answer what it completes, at most `limit` items:
    /// the replies to write, or None when it stopped. Err once it has stopped.
    pub fn receive(
        &mut self,
        reader: &mut ServerReader,
        data: &[u8],
        mut limit: usize,
        now: f64,
    ) -> Result<Option<Vec<u8>>, String> {
        if self.stopped {
            return Err(STOPPED.into());
        }
        if !self.received_any && !data.is_empty() {
            if data[0] == 0x16 && !self.limits.tls {
                // A TLS ClientHello on the plaintext port: the state machine closes.
                self.unread = data.to_vec();
                self.stopped = true;
                return Ok(None);
            }
            self.received_any = true;
        }
        self.items.extend(reader.feed(data));
        let mut first = true; // no event yet in this read
        while let Some(mut item) = self.items.pop_front() {
            let taken = if limit == 0 {
                None
            } else {
                match &mut item {
                    Item::Command(cmd) => self.command(cmd, reader)?,
                    Item::Data(_) if self.in_data => Some(Taken::Event),
                    Item::DataEnd(end) => self.data_end(end),
                    _ => None,
                }
            };
            let Some(taken) = taken else {
                self.items.push_front(item);
                self.stopped = true;
                return Ok(None);
            };
            limit -= 1;
            if self.closed {
                // QUIT: the state machine closes the connection.
                self.stopped = true;
                return Ok(None);
            }
            if taken == Taken::Event {
                if first {
                    // The server marks progress once per read that yields an event, then
                    // records the events in order: content at the rate, the end at once.
                    first = false;
                    self.last_progress = now;
                }
                match &item {
                    Item::Data(bytes) => self.content_progress(bytes.len() as u64, now),
                    Item::DataEnd(_) if self.data_started.is_some() => {
                        self.data_started = None;
                        self.last_progress = now;
                    }
                    _ => {}
                }
            }
        }
        Ok(Some(std::mem::take(&mut self.out)))
    }

    /// The session as it stands; the fast path is done.
    pub fn take_over(&mut self) -> State {
        self.stopped = true;
        State {
            hello: self.hello,
            hello_name: self.hello_name.clone(),
            mail: self.mail.clone(),
            recipients: self.recipients.clone(),
            in_data: self.in_data,
            junk: self.junk,
            closed: self.closed,
            replies: std::mem::take(&mut self.out),
            items: self.items.drain(..).collect(),
            unread: std::mem::take(&mut self.unread),
            received_any: self.received_any,
            last_progress: self.last_progress,
            data_started: self.data_started,
            data_bytes: self.data_bytes,
        }
    }

    // -- one item each: None to stop (nothing changed) --------------------------------------

    /// A command taken gives up its path (its item is dropped next); one refused is
    /// left as it came, for the state machine.
    fn command(
        &mut self,
        cmd: &mut Command,
        reader: &mut ServerReader,
    ) -> Result<Option<Taken>, String> {
        let verb = cmd.verb.as_str();
        let pipelined = !self.items.is_empty() || reader.buffered() > 0;
        // RFC 2920 §3.1: the state machine refuses a group that goes on after these.
        let sync = matches!(verb, "EHLO" | "HELO" | "DATA" | "NOOP");
        if self.limits.strict_pipelining && pipelined && (sync || self.hello == Some("HELO")) {
            return Ok(None);
        }
        let junk = matches!(verb, "RSET" | "NOOP");
        if junk && self.junk + 1 > self.limits.max_junk_commands {
            return Ok(None); // the state machine counts an error
        }
        let reply = match verb {
            "MAIL" => {
                if self.hello.is_none() || self.mail.is_some() || !cmd.params.is_empty() {
                    return Ok(None);
                }
                if cmd.path.is_none() {
                    return Ok(None);
                }
                self.mail = cmd.path.take();
                &self.replies.mail
            }
            "RCPT" => {
                let ascii = |path: &Path| path.local_part.is_ascii() && path.domain.is_ascii();
                if !cmd.path.as_ref().is_some_and(ascii)
                    || self.mail.is_none()
                    || !cmd.params.is_empty()
                    || self.recipients.len() >= self.limits.max_recipients
                {
                    return Ok(None);
                }
                self.recipients.extend(cmd.path.take());
                &self.replies.rcpt
            }
            "DATA" => {
                if self.mail.is_none() || self.recipients.is_empty() {
                    return Ok(None);
                }
                self.in_data = true;
                self.out.extend_from_slice(&self.replies.data);
                // The reader paused after DATA: nothing follows it in the queue yet, so
                // what it held back comes right after it.
                self.items.extend(reader.expect_data()?);
                return Ok(Some(Taken::Quiet));
            }
            "HELO" | "EHLO" => {
                let helo = verb == "HELO";
                self.hello = Some(if helo { "HELO" } else { "EHLO" });
                self.hello_name = Some(cmd.arg.clone());
                self.reset();
                if helo {
                    &self.replies.hello
                } else {
                    &self.replies.ehlo
                }
            }
            "RSET" => {
                self.junk += 1;
                self.reset();
                &self.replies.reset
            }
            "NOOP" => {
                self.junk += 1;
                &self.replies.noop
            }
            "QUIT" => {
                self.closed = true;
                &self.replies.quit
            }
            _ => return Ok(None),
        };
        self.out.extend_from_slice(reply);
        Ok(Some(Taken::Event))
    }

    fn data_end(&mut self, end: &DataEnd) -> Option<Taken> {
        if !self.in_data || end.violation.is_some() {
            return None;
        }
        self.reset();
        self.junk = 0; // a client that delivers mail is forgiven its junk
        self.out.extend_from_slice(&self.replies.message);
        Some(Taken::Event)
    }

    fn content_progress(&mut self, size: u64, now: f64) {
        // Checklist B9: content counts as progress only at the minimum rate, so a DATA
        // trickled slower than that is cut off by the idle timeout.
        let Some(rate) = self.limits.data_min_rate.filter(|r| *r != 0.0) else {
            return;
        };
        if self.data_started.is_none() {
            self.data_started = Some(now);
            self.data_bytes = 0;
        }
        let started = self.data_started.unwrap_or(now);
        self.data_bytes += size;
        self.last_progress = now.min(started + self.data_bytes as f64 / rate);
    }

    fn reset(&mut self) {
        self.mail = None;
        self.recipients.clear();
        self.in_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::ReaderConfig;

    fn fast(strict: bool) -> (FastPath, ServerReader) {
        let reply = |s: &str| s.as_bytes().to_vec();
        let replies = Replies {
            hello: reply("250 helo\r\n"),
            ehlo: reply("250-ehlo\r\n250 HELP\r\n"),
            mail: reply("250 mail\r\n"),
            rcpt: reply("250 rcpt\r\n"),
            data: reply("354 go\r\n"),
            message: reply("250 queued\r\n"),
            reset: reply("250 reset\r\n"),
            noop: reply("250 noop\r\n"),
            quit: reply("221 bye\r\n"),
        };
        let limits = Limits {
            max_recipients: 2,
            max_junk_commands: 2,
            strict_pipelining: strict,
            tls: false,
            data_min_rate: Some(100.0),
        };
        let reader = ServerReader::new(ReaderConfig::default()).unwrap();
        (FastPath::new(replies, limits, 0.0), reader)
    }

    fn said(out: Result<Option<Vec<u8>>, String>) -> String {
        String::from_utf8(out.unwrap().expect("stopped")).unwrap()
    }

    #[test]
    fn a_sink_transaction_never_stops() {
        let (mut f, mut r) = fast(true);
        assert_eq!(
            said(f.receive(&mut r, b"EHLO c.example\r\n", 256, 1.0)),
            "250-ehlo\r\n250 HELP\r\n"
        );
        let group = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n";
        assert_eq!(
            said(f.receive(&mut r, group, 256, 2.0)),
            "250 mail\r\n250 rcpt\r\n"
        );
        assert_eq!(said(f.receive(&mut r, b"DATA\r\n", 256, 3.0)), "354 go\r\n");
        assert_eq!(said(f.receive(&mut r, b"Subject: x\r\n", 256, 3.0)), "");
        assert_eq!(f.last_progress(), 3.0); // the content is an event
        assert_eq!(
            said(f.receive(&mut r, b"\r\nbody\r\n.\r\n", 256, 4.0)),
            "250 queued\r\n"
        );
        assert_eq!(f.last_progress(), 4.0); // the end of a message is progress at once
        assert_eq!(
            said(f.receive(&mut r, b"RSET\r\n", 256, 5.0)),
            "250 reset\r\n"
        );
        assert!(!f.closed());
        assert_eq!(f.receive(&mut r, b"QUIT\r\n", 256, 6.0), Ok(None));
        assert!(f.closed());
        let state = f.take_over();
        assert!(state.closed);
        assert_eq!(state.replies, b"221 bye\r\n");
        assert_eq!(state.hello, Some("EHLO"));
        assert_eq!(state.junk, 1);
    }

    #[test]
    fn it_stops_before_what_it_does_not_take_and_hands_it_back() {
        let (mut f, mut r) = fast(false);
        let input = b"HELO c\r\nMAIL FROM:<a@b.example>\r\nVRFY x\r\nNOOP\r\n";
        assert_eq!(f.receive(&mut r, input, 256, 1.0), Ok(None));
        assert_eq!(
            f.receive(&mut r, b"NOOP\r\n", 256, 1.0),
            Err(STOPPED.into())
        );
        let state = f.take_over();
        assert_eq!(state.replies, b"250 helo\r\n250 mail\r\n");
        assert!(state.mail.is_some());
        assert_eq!(state.items.len(), 2); // VRFY, NOOP
        assert!(!state.closed);
    }

    #[test]
    fn refusals_and_limits_are_the_state_machines() {
        // MAIL before HELO, a third recipient, a third junk command, a pipelined DATA.
        for input in [&b"MAIL FROM:<a@b.example>\r\n"[..], b"HELO c\r\n"] {
            let (mut f, mut r) = fast(true);
            let out = f.receive(&mut r, input, 256, 1.0);
            assert_eq!(out.is_ok_and(|o| o.is_none()), input.starts_with(b"MAIL"));
        }
        let (mut f, mut r) = fast(false);
        let rcpts =
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<x@y>\r\nRCPT TO:<x@y>\r\n";
        assert_eq!(f.receive(&mut r, rcpts, 256, 1.0), Ok(None));
        assert_eq!(f.take_over().recipients.len(), 2);
        let (mut f, mut r) = fast(false);
        assert_eq!(
            f.receive(&mut r, b"NOOP\r\nRSET\r\nNOOP\r\n", 256, 1.0),
            Ok(None)
        );
        assert_eq!(f.take_over().junk, 2);
        let (mut f, mut r) = fast(true);
        let group = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nx\r\n";
        assert_eq!(f.receive(&mut r, group, 256, 1.0), Ok(None)); // EHLO is a sync point
        let (mut f, mut r) = fast(true);
        let _ = said(f.receive(&mut r, b"EHLO c\r\n", 256, 1.0));
        let group = b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nx\r\n";
        assert_eq!(f.receive(&mut r, group, 256, 1.0), Ok(None)); // so is DATA
        assert_eq!(f.take_over().replies, b"250 mail\r\n250 rcpt\r\n");
    }

    #[test]
    fn content_is_progress_only_at_the_minimum_rate() {
        let (mut f, mut r) = fast(false);
        let _ = said(f.receive(
            &mut r,
            b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n",
            256,
            1.0,
        ));
        let _ = said(f.receive(&mut r, b"DATA\r\n", 256, 2.0));
        assert_eq!(f.last_progress(), 1.0); // DATA is no event
        let _ = said(f.receive(&mut r, b"0123456\r\n", 256, 10.0)); // 9 octets...
        let _ = said(f.receive(&mut r, b"0123456\r\n", 256, 50.0)); // ...then 9 more
        assert_eq!(f.last_progress(), 10.0 + 18.0 / 100.0);
    }

    #[test]
    fn a_tls_handshake_on_the_plaintext_port_is_not_read_and_the_limit_stops_it() {
        let (mut f, mut r) = fast(false);
        assert_eq!(f.receive(&mut r, b"\x16\x03\x01", 256, 1.0), Ok(None));
        let state = f.take_over();
        assert_eq!(state.unread, b"\x16\x03\x01");
        assert!(!state.received_any);
        let (mut f, mut r) = fast(false);
        assert_eq!(f.receive(&mut r, b"NOOP\r\nRSET\r\n", 1, 1.0), Ok(None));
        let state = f.take_over();
        assert_eq!(state.replies, b"250 noop\r\n");
        assert_eq!(state.items.len(), 1);
    }
}
