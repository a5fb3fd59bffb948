//! The wire form of a message body: line ends normalized to CRLF, dots doubled
//! (RFC 5321 §4.5.2). The reverse direction, unstuffing, is part of `framing`.

use memchr::memchr2;

/// Streaming encoder for a message body.
///
/// Bare CR and bare LF become CRLF, a final CRLF is ensured, and with `dots` (the DATA
/// form) lines starting with `.` get a second one and `.\r\n` ends the output. Without
/// `dots` (the BDAT form) only the line ends are normalized.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    dots: bool,
    pending_cr: bool, // a CR ended the last chunk; the next byte decides
    at_line_start: bool,
    empty: bool,
    finished: bool,
}

impl DotStuffer {
    pub fn new(dots: bool) -> Self {
        DotStuffer {
            dots,
            pending_cr: false,
            at_line_start: true,
            empty: true,
            finished: false,
        }
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        if self.finished {
            return Err("DotStuffer.feed() after finish()");
        }
        if data.is_empty() {
            return Ok(());
        }
        let start_len = out.len();
        let saved_line_start = self.at_line_start;
        let mut pos = 0;
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(b"\r\n");
            if data[0] == b'\n' {
                pos = 1;
            }
            self.at_line_start = true;
        }
        let n = data.len();
        let mut run = pos; // data[run..pos] is copied as is when the run ends
        while pos < n {
            if self.at_line_start && self.dots && data[pos] == b'.' {
                out.extend_from_slice(&data[run..pos]);
                out.push(b'.');
                run = pos;
            }
            self.at_line_start = false;
            let i = match memchr2(b'\r', b'\n', &data[pos..]) {
                Some(off) => pos + off,
                None => break,
            };
            if data[i] == b'\r' {
                if i + 1 == n {
                    // keep the CR back until the next byte says whether it is bare
                    out.extend_from_slice(&data[run..i]);
                    run = n;
                    self.pending_cr = true;
                    break;
                }
                if data[i + 1] == b'\n' {
                    pos = i + 2;
                } else {
                    out.extend_from_slice(&data[run..i]);
                    out.extend_from_slice(b"\r\n");
                    pos = i + 1;
                    run = pos;
                }
            } else {
                out.extend_from_slice(&data[run..i]);
                out.extend_from_slice(b"\r\n");
                pos = i + 1;
                run = pos;
            }
            self.at_line_start = true;
        }
        if run < n {
            out.extend_from_slice(&data[run..n]);
        }
        if out.len() > start_len {
            self.empty = false;
            self.at_line_start = out.last() == Some(&b'\n');
        } else {
            self.at_line_start = saved_line_start;
        }
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        if self.finished {
            return Err("DotStuffer.finish() called twice");
        }
        self.finished = true;
        if self.pending_cr || (!self.empty && !self.at_line_start) {
            out.extend_from_slice(b"\r\n");
        }
        if self.dots {
            out.extend_from_slice(b".\r\n");
        }
        Ok(())
    }
}

/// The DATA wire form of `body`, ending with `.\r\n`.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    wire_form(body, true)
}

/// The whole wire form of `body` in one pass: with `dots`, the DATA form (as
/// [`dot_stuff`]); without, the BDAT form (line ends normalized, a final CRLF ensured),
/// whose length is the message size RFC 1870 asks for.
pub fn wire_form(body: &[u8], dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 8);
    let mut stuffer = DotStuffer::new(dots);
    stuffer.feed(body, &mut out).expect("fresh stuffer");
    stuffer.finish(&mut out).expect("fresh stuffer");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"."), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r\n."), b"x\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"\r\n.\r\n.\r\n"), b"\r\n..\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r"), b"a\r\n.\r\n");
        assert_eq!(wire_form(b"", false), b"");
        assert_eq!(wire_form(b".a\nb", false), b".a\r\nb\r\n");
    }

    #[test]
    fn streaming_matches_whole() {
        let body = b"a\r\n.b\rc\n\r\n..\r\r\n.";
        let whole = dot_stuff(body);
        for split in 0..=body.len() {
            let mut s = DotStuffer::new(true);
            let mut out = Vec::new();
            s.feed(&body[..split], &mut out).unwrap();
            s.feed(&body[split..], &mut out).unwrap();
            s.finish(&mut out).unwrap();
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
