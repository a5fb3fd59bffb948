//! Server replies: reading them (client side), formatting them (server side), and the
//! capabilities of an EHLO reply.

use crate::scan::find_crlf;

/// Octets including CRLF that `format_reply` writes per line (RFC 5321 §4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// One complete (possibly multi-line) reply. `lines` hold the text after `NNN-`/`NNN `
/// as sent; `enhanced` is the RFC 3463 code of the first line when its class matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

fn reply_code(line: &[u8]) -> Option<u16> {
    match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', ..] => {
            Some((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
        }
        _ => None,
    }
}

/// Digits at the start of `s`: (count, rest).
fn digits(s: &[u8]) -> (usize, &[u8]) {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (n, &s[n..])
}

/// `class.subject.detail` at the start of `text`, followed by a space or the end.
fn enhanced_code(text: &str) -> Option<(u8, &str)> {
    let b = text.as_bytes();
    let class = match b.first() {
        Some(c @ (b'2' | b'4' | b'5')) => *c - b'0',
        _ => return None,
    };
    let rest = b.get(1..)?.strip_prefix(b".")?;
    let (n1, rest) = digits(rest);
    if !(1..=3).contains(&n1) {
        return None;
    }
    let rest = rest.strip_prefix(b".")?;
    let (n2, rest) = digits(rest);
    if !(1..=3).contains(&n2) || !(rest.is_empty() || rest[0] == b' ') {
        return None;
    }
    Some((class, &text[..b.len() - rest.len()]))
}

/// Assembles replies from the bytes a server sends (RFC 5321 §4.2). Strict and bounded;
/// after an error the reader must be discarded.
#[derive(Debug, Clone)]
pub struct ReplyReader {
    pub max_line: usize,
    pub max_lines: usize,
    pub max_reply: usize,
    buf: Vec<u8>,
    code: Option<u16>,
    lines: Vec<String>,
    size: usize,
}

impl ReplyReader {
    pub fn new(max_line: usize, max_lines: usize, max_reply: usize) -> Self {
        ReplyReader {
            max_line,
            max_lines,
            max_reply,
            buf: Vec::new(),
            code: None,
            lines: Vec::new(),
            size: 0,
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn in_reply(&self) -> bool {
        self.code.is_some()
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Reply>, &'static str> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(off) = find_crlf(&buf[pos..]) {
            let end = pos + off;
            if end + 2 - pos > self.max_line {
                return Err("reply line too long");
            }
            if let Some(reply) = self.line(&buf[pos..end])? {
                out.push(reply);
            }
            pos = end + 2;
        }
        let rest = &buf[pos..];
        if rest.len() > self.max_line {
            return Err("reply line too long");
        }
        if memchr::memchr(b'\n', rest).is_some() {
            return Err("bare CR, LF or NUL in reply");
        }
        buf.drain(..pos);
        self.buf = buf;
        Ok(out)
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, &'static str> {
        let code = match reply_code(line) {
            Some(c) if line.len() == 3 || line[3] == b' ' || line[3] == b'-' => c,
            _ => return Err("malformed reply line"),
        };
        if memchr::memchr3(b'\r', b'\n', 0, line).is_some() {
            return Err("bare CR, LF or NUL in reply");
        }
        if self.code.is_some_and(|c| c != code) {
            return Err("inconsistent reply codes");
        }
        self.size += line.len() + 2;
        if self.lines.len() + 1 > self.max_lines {
            return Err("too many reply lines");
        }
        if self.size > self.max_reply {
            return Err("reply too long");
        }
        let text = line.get(4..).unwrap_or(b"");
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if line.len() > 3 && line[3] == b'-' {
            self.code = Some(code);
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        self.size = 0;
        let enhanced = match enhanced_code(&lines[0]) {
            Some((class, e)) if class as u16 == code / 100 => Some(e.to_string()),
            _ => None,
        };
        Ok(Some(Reply {
            code,
            enhanced,
            lines,
        }))
    }
}

fn valid_code(code: i64) -> bool {
    (200..=559).contains(&code) && (code / 10) % 10 <= 5
}

/// Split `line` into pieces of at most `budget` UTF-8 octets, on character bounds.
fn wrap(line: &str, budget: usize) -> Vec<&str> {
    if line.len() <= budget {
        return vec![line];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in line.char_indices() {
        if i + c.len_utf8() - start > budget {
            pieces.push(&line[start..i]);
            start = i;
        }
    }
    pieces.push(&line[start..]);
    pieces
}

pub const BAD_CODE: &str = "reply code must be three digits, 2xx to 5xx, second digit 0-5";
pub const BAD_ENHANCED: &str =
    "enhanced status code must be class.subject.detail matching the reply code";
pub const BAD_TEXT: &str = "reply text must not contain CR, LF or control characters";

/// `any_second_digit`: also take a second digit of 6 to 9 (2x6 to 5x9), outside RFC 5321's
/// grammar but what some applications answer (aiosmtpd passes a hook's 599 on); the line
/// is formatted and checked like any other.
pub fn check_code(code: i64, any_second_digit: bool) -> Result<(), &'static str> {
    if valid_code(code) || (any_second_digit && (200..=599).contains(&code)) {
        Ok(())
    } else {
        Err(BAD_CODE)
    }
}

pub fn check_enhanced(code: i64, enhanced: &str) -> Result<(), &'static str> {
    match enhanced_code(enhanced) {
        Some((class, e)) if e.len() == enhanced.len() && class as i64 == code / 100 => Ok(()),
        _ => Err(BAD_ENHANCED),
    }
}

pub fn check_text(line: &str) -> Result<(), &'static str> {
    if line.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f') {
        Err(BAD_TEXT)
    } else {
        Ok(())
    }
}

/// Format a reply; `lines` and `enhanced` must have passed `check_text`/`check_enhanced`.
/// Lines longer than 512 octets are wrapped onto continuation lines.
pub fn format_checked(code: u16, lines: &[&str], enhanced: Option<&str>) -> Vec<u8> {
    let prefix_len = enhanced.map_or(0, |e| e.len() + 1);
    let budget = MAX_REPLY_LINE - 6 - prefix_len;
    let mut pieces: Vec<&str> = Vec::new();
    if lines.is_empty() {
        pieces.push("");
    }
    for line in lines {
        pieces.extend(wrap(line, budget));
    }
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len() + prefix_len + 6).sum());
    let code = code.to_string();
    for (i, piece) in pieces.iter().enumerate() {
        let more = i + 1 < pieces.len();
        out.extend_from_slice(code.as_bytes());
        if piece.is_empty() && enhanced.is_none() {
            if more {
                out.push(b'-');
            }
        } else {
            out.push(if more { b'-' } else { b' ' });
            if let Some(e) = enhanced {
                out.extend_from_slice(e.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(piece.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Validate and format a reply.
pub fn format_reply(
    code: i64,
    lines: &[&str],
    enhanced: Option<&str>,
) -> Result<Vec<u8>, &'static str> {
    check_code(code, false)?;
    if let Some(e) = enhanced {
        check_enhanced(code, e)?;
    }
    for line in lines {
        check_text(line)?;
    }
    Ok(format_checked(code as u16, lines, enhanced))
}

/// The parts of an EHLO reply: the server's name, its greeting text, and the extensions
/// it offers (keyword upper-cased, parameter text; the first of duplicates wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EhloReply {
    pub domain: String,
    pub greeting: String,
    pub extensions: Vec<(String, String)>,
}

fn is_keyword(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Read the capabilities from the lines of a 250 EHLO reply.
pub fn parse_ehlo<S: AsRef<str>>(lines: &[S]) -> EhloReply {
    let first = match lines.first() {
        Some(f) => f.as_ref(),
        None => return EhloReply::default(),
    };
    let (domain, greeting) = first.split_once(' ').unwrap_or((first, ""));
    let mut extensions: Vec<(String, String)> = Vec::new();
    for line in &lines[1..] {
        let line = line.as_ref();
        let (keyword, params) = line.split_once(' ').unwrap_or((line, ""));
        if !is_keyword(keyword) {
            continue;
        }
        let keyword = keyword.to_ascii_uppercase();
        if !extensions.iter().any(|(k, _)| *k == keyword) {
            extensions.push((keyword, params.trim_matches(' ').to_string()));
        }
    }
    EhloReply {
        domain: domain.to_string(),
        greeting: greeting.to_string(),
        extensions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line() {
        let mut r = ReplyReader::new(2048, 256, 65536);
        assert!(r
            .feed(b"250-mx.example hi\r\n250-SIZE 100\r")
            .unwrap()
            .is_empty());
        let got = r.feed(b"\n250 8BITMIME\r\n221 2.0.0 Bye\r\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].lines, vec!["mx.example hi", "SIZE 100", "8BITMIME"]);
        assert_eq!(got[1].enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(r.feed(b"354\r\n").unwrap()[0].lines, vec![""]);
    }

    #[test]
    fn malformed() {
        for bad in [
            &b"25 x\r\n"[..],
            b"250x\r\n",
            b"600 x\r\n",
            b"260 x\r\n",
            b"250-a\r\n251 b\r\n",
            b"250 a\rb\r\n",
            b"250 a\0\r\n",
            b"250 a\n",
        ] {
            let mut r = ReplyReader::new(2048, 256, 65536);
            assert!(r.feed(bad).is_err(), "{:?}", bad);
        }
        let mut r = ReplyReader::new(64, 256, 65536);
        assert!(r.feed(&[b'x'; 65]).is_err());
        let mut r = ReplyReader::new(64, 2, 65536);
        assert!(r.feed(b"250-a\r\n250-b\r\n250 c\r\n").is_err());
    }

    #[test]
    fn enhanced_class_must_match() {
        let mut r = ReplyReader::new(2048, 256, 65536);
        assert_eq!(r.feed(b"550 2.0.0 x\r\n").unwrap()[0].enhanced, None);
        assert_eq!(r.feed(b"550 5.1.1000 x\r\n").unwrap()[0].enhanced, None);
        assert_eq!(
            r.feed(b"550 5.1.1\r\n").unwrap()[0].enhanced.as_deref(),
            Some("5.1.1")
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_reply(250, &["OK"], None).unwrap(), b"250 OK\r\n");
        assert_eq!(
            format_reply(250, &["a", "b"], Some("2.0.0")).unwrap(),
            b"250-2.0.0 a\r\n250 2.0.0 b\r\n"
        );
        assert_eq!(format_reply(354, &[""], None).unwrap(), b"354\r\n");
        assert!(format_reply(250, &["a\r\n250 b"], None).is_err());
        assert!(format_reply(199, &["a"], None).is_err());
        assert!(format_reply(250, &["a"], Some("5.0.0")).is_err());
        let long = "x".repeat(1000);
        let out = format_reply(250, &[&long], None).unwrap();
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 511));
    }

    #[test]
    fn ehlo() {
        let e = parse_ehlo(&[
            "mx hi there",
            "SIZE 1000",
            "auth PLAIN LOGIN",
            "bad_kw",
            "SIZE 1",
        ]);
        assert_eq!(e.domain, "mx");
        assert_eq!(e.greeting, "hi there");
        assert_eq!(
            e.extensions,
            vec![
                ("SIZE".into(), "1000".into()),
                ("AUTH".into(), "PLAIN LOGIN".into())
            ]
        );
    }
}
