//! `FastPath` (the server's hot loop for a sink) driven as the I/O layer drives it: the
//! client's stream cut into reads, each fed with an item limit, until it stops.
//!
//! Input: a 4-byte header (limits, strict pipelining, TLS, the cut and the item limit),
//! then the client's byte stream.
//!
//! Invariants:
//! - no panic; once stopped, `receive` is an error;
//! - what it writes is only the replies it was given, whole, in order;
//! - it never holds more recipients than `max_recipients`, nor counts more junk commands
//!   than `max_junk_commands`, and a session it handed back after QUIT is closed;
//! - `last_progress` never runs ahead of the time of the read.
#![no_main]

use ferrosmtp::fastpath::{FastPath, Limits, Replies};
use ferrosmtp::{ReaderConfig, ServerReader};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 4;
const REPLIES: [&[u8]; 9] = [
    b"250 helo\r\n",
    b"250-ehlo\r\n250 HELP\r\n",
    b"250 2.1.0 mail\r\n",
    b"250 2.1.5 rcpt\r\n",
    b"354 data\r\n",
    b"250 2.0.0 message\r\n",
    b"250 2.0.0 reset\r\n",
    b"250 2.0.0 noop\r\n",
    b"221 2.0.0 quit\r\n",
];

/// Consume `out` as a sequence of whole replies; false when something else is there.
fn only_replies(mut out: &[u8]) -> bool {
    while !out.is_empty() {
        match REPLIES.iter().find(|r| out.starts_with(r)) {
            Some(r) => out = &out[r.len()..],
            None => return false,
        }
    }
    true
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER {
        return;
    }
    let (h, stream) = input.split_at(HEADER);
    let max_recipients = 1 + (h[0] & 0x0f) as usize;
    let max_junk = (h[0] >> 4) as u64;
    let limits = Limits {
        max_recipients,
        max_junk_commands: max_junk,
        strict_pipelining: h[1] & 1 != 0,
        tls: h[1] & 2 != 0,
        data_min_rate: if h[1] & 4 != 0 { Some(100.0) } else { None },
    };
    let cut = 1 + h[2] as usize;
    let limit = if h[3] == 0 { 256 } else { h[3] as usize % 8 };
    let replies = Replies {
        hello: REPLIES[0].to_vec(),
        ehlo: REPLIES[1].to_vec(),
        mail: REPLIES[2].to_vec(),
        rcpt: REPLIES[3].to_vec(),
        data: REPLIES[4].to_vec(),
        message: REPLIES[5].to_vec(),
        reset: REPLIES[6].to_vec(),
        noop: REPLIES[7].to_vec(),
        quit: REPLIES[8].to_vec(),
    };
    let cfg = ReaderConfig {
        smtputf8: h[1] & 8 != 0,
        max_message_size: Some(4096),
        ..ReaderConfig::default()
    };
    let mut reader = ServerReader::new(cfg).expect("a valid reader configuration");
    let mut fast = FastPath::new(replies, limits, 0.0);
    let mut now = 0.0;
    let mut stopped = false;
    for read in stream.chunks(cut) {
        now += 1.0;
        match fast.receive(&mut reader, read, limit, now) {
            Ok(Some(out)) => assert!(only_replies(&out), "foreign bytes in {out:?}"),
            Ok(None) => {
                stopped = true;
                break;
            }
            Err(e) => panic!("receive failed before it stopped: {e}"),
        }
        assert!(fast.last_progress() <= now);
    }
    if stopped {
        assert!(fast
            .receive(&mut reader, b"NOOP\r\n", 256, now + 1.0)
            .is_err());
    }
    let state = fast.take_over();
    assert!(
        only_replies(&state.replies),
        "foreign bytes in {:?}",
        state.replies
    );
    assert!(state.recipients.len() <= max_recipients);
    assert!(state.junk <= max_junk);
    if state.closed {
        assert!(state.replies.ends_with(REPLIES[8]));
    }
});
