//! `ServerReader` driven as a protocol drives it, over one input fed three ways: in one
//! piece, in the chunk sizes the header chooses, and one byte at a time.
//!
//! Input: a 12-byte header (options, limits, the protocol's accept/refuse decisions,
//! chunk sizes), then the client's byte stream.
//!
//! Invariants:
//! - no panic; every `Violation` (and every `DataEnd` refusal) has a code 400-599, a fatal
//!   one closes the reader, and a closed reader yields nothing more;
//! - `buffered()` never exceeds max(max_command_line + 1024, max_auth_line, max_buffer);
//! - a DATA `DataEnd` comes only where the body read since `expect_data()` is exactly
//!   `.\r\n` or ends with `\r\n.\r\n` (checked on the byte-at-a-time run, where the item
//!   appears on the very byte that produced it);
//! - DATA content: no bare CR/LF under `reject` (but for a CR a size cut leaves at the
//!   end of a refused body), no bare LF under `normalize`, within
//!   `max_message_size` and `max_text_line`, and when accepted, `size` bytes ending in CRLF;
//! - BDAT: exactly `n` content octets under `reject`, `size` equal to the octets produced;
//! - Data items are never empty;
//! - chunking invariance: the three runs give the same items once adjacent Data items are
//!   merged, up to an accepted STARTTLS (whose `reset()` rightly drops whatever the client
//!   had sent in the same read), unless the pipelined-input cap (`buffer_full`) fired in a
//!   run: it depends on how much arrived in one read, by design.
#![no_main]

use ferrosmtp::{DataEnd, Item, Mode, ReaderConfig, ServerReader};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 12;

struct Options {
    cfg: ReaderConfig,
    decisions: u16,
    chunk_sizes: [usize; 3],
}

fn options(h: &[u8]) -> Options {
    let flags = h[0];
    let cfg = ReaderConfig {
        max_command_line: 16 + h[1] as usize * 4,
        max_auth_line: 16 + h[2] as usize * 8,
        max_text_line: (flags & 0x02 != 0).then_some(3 + h[3] as usize),
        max_message_size: (flags & 0x04 != 0).then_some(u16::from_le_bytes([h[4], h[5]]) as u64),
        normalize: flags & 0x01 != 0,
        first_limit_wins: flags & 0x20 != 0,
        smtputf8: flags & 0x08 != 0,
        max_buffer: if flags & 0x10 != 0 {
            16 + h[6] as usize * 16
        } else {
            1 << 20
        },
    };
    Options {
        cfg,
        decisions: u16::from_le_bytes([h[7], h[8]]),
        chunk_sizes: [
            1 + h[9] as usize,
            1 + h[10] as usize,
            1 + h[11] as usize * 8,
        ],
    }
}

/// What a body being read is, to check its items when its `DataEnd` comes.
enum Body {
    Data { start: usize, content: Vec<u8> },
    Bdat { declared: u64, content: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feeding {
    Whole,
    Chunked,
    Bytewise,
}

struct Run<'a> {
    cfg: &'a ReaderConfig,
    stream: &'a [u8],
    feeding: Feeding,
    reader: ServerReader,
    decisions: u16,
    decided: u32,
    fed: usize,
    items: Vec<Item>,
    /// `items.len()` at the first accepted STARTTLS: later items may rightly differ.
    cut: Option<usize>,
    buffer_full: bool,
    stopped: bool,
    in_auth: bool,
    auth_lines: u32,
    body: Option<Body>,
}

impl<'a> Run<'a> {
    fn new(opts: &'a Options, stream: &'a [u8], feeding: Feeding) -> Self {
        Run {
            cfg: &opts.cfg,
            stream,
            feeding,
            reader: ServerReader::new(opts.cfg.clone()).expect("valid limits"),
            decisions: opts.decisions,
            decided: 0,
            fed: 0,
            items: Vec::new(),
            cut: None,
            buffer_full: false,
            stopped: false,
            in_auth: false,
            auth_lines: 0,
            body: None,
        }
    }

    /// The protocol's answer to the n-th pausing command: accept (true) or refuse it.
    /// The n-th pause is the same in every run, so every run decides alike.
    fn decide(&mut self) -> bool {
        let bit = (self.decisions >> (self.decided % 16)) & 1 == 1;
        self.decided += 1;
        bit
    }

    fn bound(&self) -> usize {
        (self.cfg.max_command_line + 1024)
            .max(self.cfg.max_auth_line)
            .max(self.cfg.max_buffer)
    }

    fn go(mut self, chunk_sizes: &[usize; 3]) -> Self {
        let mut pos = 0;
        let mut i = 0;
        while pos < self.stream.len() && !self.stopped {
            let size = match self.feeding {
                Feeding::Whole => self.stream.len(),
                Feeding::Chunked => chunk_sizes[i % 3],
                Feeding::Bytewise => 1,
            };
            i += 1;
            let end = (pos + size).min(self.stream.len());
            let closed = self.reader.mode() == Mode::Closed;
            let batch = self.reader.feed(&self.stream[pos..end]);
            self.fed = end;
            pos = end;
            if closed {
                assert!(batch.is_empty(), "a closed reader produced {batch:?}");
            }
            self.take(batch);
            self.resume();
            assert!(
                self.reader.buffered() <= self.bound(),
                "buffered {} > bound {} ({:?})",
                self.reader.buffered(),
                self.bound(),
                self.feeding
            );
        }
        self
    }

    /// Call what the protocol calls while the reader waits for its decision.
    fn resume(&mut self) {
        while !self.stopped && self.reader.mode() == Mode::Paused {
            let last = self.items.last().cloned();
            let batch = match last {
                Some(Item::Command(c)) if c.verb == "DATA" => {
                    if self.decide() {
                        let start = self.fed - self.reader.buffered();
                        self.body = Some(Body::Data {
                            start,
                            content: Vec::new(),
                        });
                        self.reader.expect_data()
                    } else {
                        self.reader.expect_command()
                    }
                }
                Some(Item::Command(c)) if c.verb == "AUTH" => {
                    self.auth_lines = 0;
                    self.in_auth = self.decide();
                    if self.in_auth {
                        self.reader.expect_line()
                    } else {
                        self.reader.expect_command()
                    }
                }
                Some(Item::Line(_)) | Some(Item::Violation(_)) if self.in_auth => {
                    self.auth_lines += 1;
                    self.in_auth = self.auth_lines < 3 && self.decide();
                    if self.in_auth {
                        self.reader.expect_line()
                    } else {
                        self.reader.expect_command()
                    }
                }
                Some(Item::Command(c)) if c.verb == "STARTTLS" => {
                    if self.decide() {
                        self.reader.reset();
                        assert_eq!(self.reader.buffered(), 0, "plaintext kept past STARTTLS");
                        assert_eq!(self.reader.mode(), Mode::Command);
                        self.cut.get_or_insert(self.items.len());
                        Ok(Vec::new())
                    } else {
                        self.reader.expect_command()
                    }
                }
                Some(Item::Command(c)) if c.verb == "QUIT" => {
                    self.stopped = true;
                    return;
                }
                other => panic!("paused after {other:?}"),
            };
            let batch = batch.expect("the reader was paused");
            self.take(batch);
        }
    }

    fn take(&mut self, batch: Vec<Item>) {
        let n = batch.len();
        for (k, item) in batch.into_iter().enumerate() {
            self.check(&item, k + 1 == n);
            self.items.push(item);
        }
    }

    fn check(&mut self, item: &Item, last_in_batch: bool) {
        match item {
            Item::Violation(v) => {
                assert!((400..=599).contains(&v.code), "violation code {v:?}");
                if v.kind == "buffer_full" {
                    self.buffer_full = true;
                }
                if v.fatal {
                    assert_eq!(self.reader.mode(), Mode::Closed, "fatal {v:?} left it open");
                    assert!(last_in_batch, "items after fatal {v:?}");
                    self.stopped = true;
                }
            }
            Item::Data(d) => {
                assert!(!d.is_empty(), "empty Data item");
                match &mut self.body {
                    Some(Body::Data { content, .. }) | Some(Body::Bdat { content, .. }) => {
                        content.extend_from_slice(d)
                    }
                    None => panic!("Data outside a body"),
                }
            }
            Item::DataEnd(end) => {
                if let Some(v) = &end.violation {
                    assert!((400..=599).contains(&v.code), "DataEnd code {v:?}");
                }
                match self.body.take() {
                    Some(Body::Data { start, content }) => {
                        self.data_end(end, start, &content, last_in_batch)
                    }
                    Some(Body::Bdat { declared, content }) => {
                        assert_eq!(end.size, content.len() as u64, "BDAT size");
                        if !self.cfg.normalize {
                            assert_eq!(declared, content.len() as u64, "BDAT octets");
                        }
                    }
                    None => panic!("DataEnd outside a body"),
                }
            }
            Item::Command(c) => {
                assert!(self.body.is_none(), "command {c:?} inside a body");
                if c.verb == "BDAT" {
                    let declared = c.chunk_size.expect("BDAT carries its size");
                    self.body = Some(Body::Bdat {
                        declared,
                        content: Vec::new(),
                    });
                }
            }
            Item::Line(_) => assert!(self.in_auth, "Line outside an AUTH exchange"),
        }
    }

    fn data_end(&self, end: &DataEnd, start: usize, content: &[u8], last_in_batch: bool) {
        assert!(end.last, "DATA ends are last");
        if self.feeding == Feeding::Bytewise {
            // The DataEnd came out of the byte just fed: the body read so far must end
            // the DATA (the last five bytes are CRLF.CRLF), or be a lone ".\r\n".
            assert!(last_in_batch);
            let body = &self.stream[start..self.fed];
            assert!(
                body == b".\r\n" || (body.len() >= 5 && body.ends_with(b"\r\n.\r\n")),
                "DataEnd after {body:?}"
            );
        }
        assert!(
            end.size >= content.len() as u64,
            "size {} < content",
            end.size
        );
        // The size limit cuts the content on the exact byte that crosses it, which can
        // split a CRLF: a refused body may end in a lone CR.
        let uncut = match content.strip_suffix(b"\r") {
            Some(cut) if end.violation.is_some() => cut,
            _ => content,
        };
        if self.cfg.normalize {
            assert!(!has_bare_lf(content), "bare LF in normalized content");
        } else {
            assert!(
                !has_bare_lf(uncut) && !has_bare_cr(uncut),
                "bare CR/LF kept"
            );
            if end.bare_lf || end.bare_cr {
                assert!(end.violation.is_some(), "bare line end accepted");
            }
        }
        if let Some(max) = self.cfg.max_message_size {
            assert!(content.len() as u64 <= max, "content over max_message_size");
        }
        if let Some(max) = self.cfg.max_text_line {
            // `uncut`: a message cut at max_message_size may end between the CR and the LF
            // of a line end, and that CR is not line text.
            for line in split_crlf(uncut) {
                assert!(
                    line.len() <= max - 2,
                    "line of {} over max_text_line",
                    line.len()
                );
            }
        }
        if end.violation.is_none() {
            assert_eq!(end.size, content.len() as u64);
            assert!(content.is_empty() || content.ends_with(b"\r\n"));
        }
    }

    /// The items to compare across runs: adjacent Data merged, cut at STARTTLS.
    fn comparable(&self) -> Vec<Item> {
        let items = &self.items[..self.cut.unwrap_or(self.items.len())];
        let mut out: Vec<Item> = Vec::with_capacity(items.len());
        for item in items {
            match (out.last_mut(), item) {
                (Some(Item::Data(prev)), Item::Data(d)) => prev.extend_from_slice(d),
                _ => out.push(item.clone()),
            }
        }
        out
    }
}

fn has_bare_lf(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
}

fn has_bare_cr(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\r' && b.get(i + 1) != Some(&b'\n'))
}

fn split_crlf(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        out.push(&b[..i]);
        b = &b[i + 2..];
    }
    out.push(b);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let (header, stream) = data.split_at(HEADER);
    let opts = options(header);
    let runs = [Feeding::Whole, Feeding::Chunked, Feeding::Bytewise]
        .map(|f| Run::new(&opts, stream, f).go(&opts.chunk_sizes));
    let reference = runs.iter().find(|r| !r.buffer_full);
    if let Some(reference) = reference {
        let expected = reference.comparable();
        for run in runs.iter().filter(|r| !r.buffer_full) {
            let got = run.comparable();
            assert!(
                got == expected,
                "{:?} and {:?} feeding differ:\n{:?}\n{:?}",
                reference.feeding,
                run.feeding,
                expected,
                got
            );
        }
    }
});
