//! `dot_stuff` and `DotStuffer` over arbitrary bodies. Input: one byte choosing a split
//! point, then the body `x`.
//!
//! Invariants, with `n(x)` = `x` with CRLF, bare CR and bare LF all made CRLF and a final
//! CRLF ensured (empty stays empty):
//! - `dot_stuff(x)` has no bare CR or LF, ends with `.\r\n`, and holds `\r\n.\r\n` only
//!   as its final five bytes (or is exactly `.\r\n`): no body can end DATA early;
//! - a `ServerReader` in DATA mode, fed that wire form in one piece or split, gives back
//!   exactly `n(x)` with an accepting `DataEnd` of that size, and reads nothing past it;
//! - streaming (`DotStuffer` fed in two pieces) gives the same bytes as `dot_stuff`;
//! - the BDAT form (`DotStuffer::new(false)`) is exactly `n(x)`.
#![no_main]

use ferrosmtp::{dot_stuff, DotStuffer, Item, Mode, ReaderConfig, ServerReader};
use libfuzzer_sys::fuzz_target;

fn normalized(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() + 2);
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' if x.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Read `wire` as a DATA body split at `split`; the content and the DataEnd's size.
fn unstuff(wire: &[u8], split: usize) -> (Vec<u8>, u64) {
    let mut reader = ServerReader::new(ReaderConfig::default()).expect("default limits");
    assert!(matches!(&reader.feed(b"DATA\r\n")[..], [Item::Command(c)] if c.verb == "DATA"));
    let mut items = reader.expect_data().expect("paused after DATA");
    items.extend(reader.feed(&wire[..split]));
    items.extend(reader.feed(&wire[split..]));
    let mut content = Vec::new();
    let mut size = None;
    for item in items {
        match item {
            Item::Data(d) if size.is_none() => content.extend_from_slice(&d),
            Item::DataEnd(end) if size.is_none() => {
                assert!(end.violation.is_none(), "{end:?}");
                assert!(!end.bare_cr && !end.bare_lf);
                size = Some(end.size);
            }
            other => panic!("{other:?} after the end of DATA"),
        }
    }
    assert_eq!(reader.mode(), Mode::Command);
    assert_eq!(reader.buffered(), 0);
    (content, size.expect("the wire form ends DATA"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, x)) = data.split_first() else {
        return;
    };
    let wire = dot_stuff(x);
    let n = normalized(x);

    for (i, &b) in wire.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(wire.ends_with(b".\r\n"));
    if x.is_empty() {
        assert_eq!(wire, b".\r\n");
    } else {
        assert!(wire.len() >= 5 && !wire.starts_with(b".\r\n"));
        let early = wire.windows(5).position(|w| w == b"\r\n.\r\n");
        assert_eq!(early, Some(wire.len() - 5), "CRLF.CRLF inside the body");
    }

    let split = pick as usize * wire.len() / 255;
    for at in [wire.len(), split] {
        let (content, size) = unstuff(&wire, at);
        assert_eq!(
            content, n,
            "unstuffing split at {at} did not give the body back"
        );
        assert_eq!(size, n.len() as u64);
    }

    let cut = (pick as usize * x.len() / 255).min(x.len());
    let mut stuffer = DotStuffer::new(true);
    let mut streamed = Vec::new();
    stuffer.feed(&x[..cut], &mut streamed).unwrap();
    stuffer.feed(&x[cut..], &mut streamed).unwrap();
    stuffer.finish(&mut streamed).unwrap();
    assert_eq!(streamed, wire, "streaming split at {cut}");

    let mut bdat = DotStuffer::new(false);
    let mut form = Vec::new();
    bdat.feed(x, &mut form).unwrap();
    bdat.finish(&mut form).unwrap();
    assert_eq!(form, n, "BDAT form");
});
