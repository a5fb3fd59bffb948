//! `ReplyReader` over arbitrary server bytes, fed in one piece and in chunks.
//!
//! Input: a 6-byte header (max_line, max_lines, max_reply, two chunk sizes), then the
//! bytes a server sends.
//!
//! Invariants: no panic; every reply has a code 200-559, 1..=max_lines lines, and an
//! enhanced code only of its own class; after each successful feed `buffered()` is at
//! most max_line; errors are fine (the reader is then dropped, as the API says), but the
//! bytes decide them, not the chunking: both feedings succeed with the same replies or
//! both fail.
#![no_main]

use ferrosmtp::{Reply, ReplyReader};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 6;

struct Limits {
    max_line: usize,
    max_lines: usize,
    max_reply: usize,
}

/// Feed `stream` in pieces of the given sizes (cycled); the replies, or the first error.
fn read(limits: &Limits, stream: &[u8], sizes: &[usize]) -> Result<Vec<Reply>, &'static str> {
    let mut reader = ReplyReader::new(limits.max_line, limits.max_lines, limits.max_reply);
    let mut replies = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let end = (pos + sizes[i % sizes.len()]).min(stream.len());
        i += 1;
        let got = reader.feed(&stream[pos..end])?;
        pos = end;
        assert!(
            reader.buffered() <= limits.max_line,
            "buffered {} > max_line {}",
            reader.buffered(),
            limits.max_line
        );
        for reply in &got {
            check(limits, reply);
        }
        replies.extend(got);
    }
    Ok(replies)
}

fn check(limits: &Limits, reply: &Reply) {
    assert!((200..=559).contains(&reply.code), "code {}", reply.code);
    assert!(!reply.lines.is_empty(), "a reply without lines");
    assert!(
        reply.lines.len() <= limits.max_lines,
        "{} lines",
        reply.lines.len()
    );
    if let Some(e) = &reply.enhanced {
        assert_eq!(
            e.as_bytes()[0] - b'0',
            (reply.code / 100) as u8,
            "enhanced {e} in a {} reply",
            reply.code
        );
        assert!(reply.lines[0].starts_with(e.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let (h, stream) = data.split_at(HEADER);
    let limits = Limits {
        max_line: 4 + h[0] as usize * 4,
        max_lines: 1 + (h[1] % 64) as usize,
        max_reply: 8 + u16::from_le_bytes([h[2], h[3]]) as usize,
    };
    let sizes = [1 + h[4] as usize, 1 + (h[5] % 16) as usize];
    let whole = read(&limits, stream, &[stream.len().max(1)]);
    let chunked = read(&limits, stream, &sizes);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the replies"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole feed {whole:?} but chunked {chunked:?}"),
    }
});
