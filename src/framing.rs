//! `ServerReader`: the server side of the wire, fed whole socket chunks.
//!
//! The module documentation of `python/ferrosmtp/_pure/framing.py` describes the modes
//! and the line-end policies; this is the same machine, state for state, with memchr
//! fast paths over clean lines.

use std::borrow::Cow;

use memchr::memchr2;

use crate::command::{parse_command, Command};
use crate::error::{self, Canned};
use crate::scan::find_crlf;

/// MAIL and RCPT lines may exceed the command limit by this much: the parameters that
/// RFC 1870 (SIZE), 3461 (DSN), 4954 (AUTH=), 6152 and 6531 define each extend the line.
pub const EXTENDED_LINE_ALLOWANCE: usize = 1024;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const DOT: u8 = b'.';

/// Input the reader refused, with the reply to send. `fatal`: the reader has stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Violation {
    pub kind: Cow<'static, str>,
    pub code: u16,
    pub enhanced: Cow<'static, str>,
    pub text: Cow<'static, str>,
    pub fatal: bool,
}

impl Violation {
    fn new(kind: &'static str, c: Canned, fatal: bool) -> Self {
        Violation {
            kind: Cow::Borrowed(kind),
            code: c.code,
            enhanced: Cow::Borrowed(c.enhanced),
            text: Cow::Borrowed(c.text),
            fatal,
        }
    }
}

/// The end of a DATA body (at CRLF.CRLF) or of a BDAT chunk (`last` is false only for a
/// BDAT chunk without LAST).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataEnd {
    pub last: bool,
    pub size: u64,
    pub bare_lf: bool,
    pub bare_cr: bool,
    pub violation: Option<Violation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Command(Command),
    Violation(Violation),
    /// Message content: DATA already unstuffed, or BDAT chunk bytes.
    Data(Vec<u8>),
    DataEnd(DataEnd),
    /// One line of an AUTH exchange, without its line end.
    Line(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Command,
    Paused,
    Data,
    Bdat,
    Line,
    Closed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Command => "command",
            Mode::Paused => "paused",
            Mode::Data => "data",
            Mode::Bdat => "bdat",
            Mode::Line => "line",
            Mode::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub max_command_line: usize,
    pub max_auth_line: usize,
    pub max_text_line: Option<usize>,
    pub max_message_size: Option<u64>,
    /// `false`: the `reject` policy; `true`: `normalize`.
    pub normalize: bool,
    /// A message over both DATA limits is refused for the one it crossed first (the line
    /// length, or the size); `false`: for its size whatever came first.
    pub first_limit_wins: bool,
    pub smtputf8: bool,
    pub max_buffer: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            max_command_line: 512,
            max_auth_line: 12288,
            max_text_line: None,
            max_message_size: None,
            normalize: false,
            first_limit_wins: false,
            smtputf8: false,
            max_buffer: 1 << 20,
        }
    }
}

impl ReaderConfig {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_command_line < 16 || self.max_auth_line < 16 || self.max_buffer < 16 {
            return Err("line and buffer limits must be at least 16 octets");
        }
        if self.max_text_line.is_some_and(|l| l < 3) {
            return Err("max_text_line must be at least 3 octets");
        }
        Ok(())
    }
}

/// Where in a DATA line the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    Start,
    Dot,
    DotCr,
    Mid,
    Cr,
}

#[derive(Debug, Clone)]
struct DataState {
    state: LineState,
    after_bare_lf: bool, // normalize: the previous line ended in a bare LF
    size: u64,
    line_len: u64,
    stopped: bool,      // a violation was seen: no more content is produced
    line_stopped: bool, // what stopped it was the line limit, before the size limit
    too_big: bool,
    long_line: bool,
    bare_lf: bool,
    bare_cr: bool,
}

impl DataState {
    fn new() -> Self {
        DataState {
            state: LineState::Start,
            after_bare_lf: false,
            size: 0,
            line_len: 0,
            stopped: false,
            line_stopped: false,
            too_big: false,
            long_line: false,
            bare_lf: false,
            bare_cr: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ChunkState {
    size: u64,
    bare_lf: bool,
    bare_cr: bool,
}

#[derive(Debug, Clone)]
pub struct ServerReader {
    cfg: ReaderConfig,
    mode: Mode,
    buf: Vec<u8>,
    discarding: bool, // inside an overlong line: drop bytes up to its end
    bdat_remaining: u64,
    bdat_last: bool,
    bdat_cr: bool, // the last chunk byte was CR (carries across chunks)
    chunk: ChunkState,
    data: DataState,
}

impl ServerReader {
    pub fn new(cfg: ReaderConfig) -> Result<Self, &'static str> {
        cfg.validate()?;
        Ok(ServerReader {
            cfg,
            mode: Mode::Command,
            buf: Vec::new(),
            discarding: false,
            bdat_remaining: 0,
            bdat_last: false,
            bdat_cr: false,
            chunk: ChunkState::default(),
            data: DataState::new(),
        })
    }

    pub fn config(&self) -> &ReaderConfig {
        &self.cfg
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bytes held but not yet turned into items.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, data: &[u8]) -> Vec<Item> {
        if self.mode == Mode::Closed {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.buf.is_empty() {
            // The common case: parse straight from the caller's bytes, copy only the tail.
            let pos = self.run(data, &mut out);
            self.keep_tail(&data[pos..], &mut out);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let pos = self.run(&buf, &mut out);
            buf.drain(..pos);
            self.buf = buf;
            self.check_buffer(&mut out);
        }
        out
    }

    pub fn expect_command(&mut self) -> Result<Vec<Item>, String> {
        self.resume(Mode::Command)
    }

    pub fn expect_data(&mut self) -> Result<Vec<Item>, String> {
        self.resume(Mode::Data)
    }

    pub fn expect_line(&mut self) -> Result<Vec<Item>, String> {
        self.resume(Mode::Line)
    }

    /// Forget all buffered input and state (after a TLS handshake) and read commands.
    pub fn reset(&mut self) {
        self.mode = Mode::Command;
        self.buf.clear();
        self.discarding = false;
        self.bdat_cr = false;
        self.data = DataState::new();
    }

    // -- driving ------------------------------------------------------------------------

    fn resume(&mut self, mode: Mode) -> Result<Vec<Item>, String> {
        if self.mode == Mode::Closed {
            return Ok(Vec::new());
        }
        if self.mode != Mode::Paused {
            return Err(format!(
                "ServerReader is in {} mode, not paused",
                self.mode.name()
            ));
        }
        if mode == Mode::Data {
            self.data = DataState::new();
        }
        self.mode = mode;
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        let pos = self.run(&buf, &mut out);
        self.keep_tail(&buf[pos..], &mut out);
        Ok(out)
    }

    fn keep_tail(&mut self, tail: &[u8], out: &mut Vec<Item>) {
        if self.mode == Mode::Closed {
            self.buf.clear();
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(tail);
        self.check_buffer(out);
    }

    fn check_buffer(&mut self, out: &mut Vec<Item>) {
        if self.mode == Mode::Closed {
            self.buf.clear();
        } else if self.mode == Mode::Paused && self.buf.len() > self.cfg.max_buffer {
            self.close();
            out.push(Item::Violation(Violation::new(
                "buffer_full",
                error::BUFFER_FULL,
                true,
            )));
        }
    }

    fn close(&mut self) {
        self.mode = Mode::Closed;
        self.buf = Vec::new();
    }

    /// Turn as much of `buf` into items as the mode allows; returns the bytes consumed.
    fn run(&mut self, buf: &[u8], out: &mut Vec<Item>) -> usize {
        let n = buf.len();
        let mut pos = 0;
        loop {
            if self.discarding {
                pos = self.discard(buf, pos);
                if self.discarding {
                    break;
                }
            }
            let mode = self.mode;
            let new = match mode {
                Mode::Command | Mode::Line => self.line_step(buf, pos, out),
                Mode::Data => self.data_step(buf, pos, out),
                Mode::Bdat => self.bdat_step(buf, pos, out),
                Mode::Paused | Mode::Closed => break,
            };
            if new == pos && self.mode == mode {
                break;
            }
            pos = new;
            if pos >= n && self.mode != Mode::Bdat {
                break;
            }
        }
        if self.mode == Mode::Closed {
            n
        } else {
            pos
        }
    }

    // -- command and line modes -------------------------------------------------------

    /// (end of content, start of next line), or None if no line end yet.
    fn find_line_end(&self, buf: &[u8], pos: usize) -> Option<(usize, usize)> {
        if self.cfg.normalize {
            let lf = pos + memchr::memchr(LF, &buf[pos..])?;
            let end = if lf > pos && buf[lf - 1] == CR {
                lf - 1
            } else {
                lf
            };
            Some((end, lf + 1))
        } else {
            let crlf = pos + find_crlf(&buf[pos..])?;
            Some((crlf, crlf + 2))
        }
    }

    fn line_limit(&self, start: &[u8]) -> usize {
        if self.mode == Mode::Line {
            return self.cfg.max_auth_line;
        }
        let verb = &start[..start.len().min(5)];
        if verb.eq_ignore_ascii_case(b"MAIL ") || verb.eq_ignore_ascii_case(b"RCPT ") {
            self.cfg.max_command_line + EXTENDED_LINE_ALLOWANCE
        } else if verb.eq_ignore_ascii_case(b"AUTH ") {
            self.cfg.max_auth_line.max(self.cfg.max_command_line)
        } else {
            self.cfg.max_command_line
        }
    }

    /// Refuse an overlong line. A BDAT line is not discarded like the others: its chunk
    /// size cannot be read, so the bytes after it would be chunk content read as commands;
    /// the reader stops instead, whatever the length (checklist B4, Postfix `bdat_cmd`).
    fn too_long(&mut self, start: &[u8], out: &mut Vec<Item>) {
        let verb = &start[..start.len().min(5)];
        if self.mode == Mode::Command && verb.eq_ignore_ascii_case(b"BDAT ") {
            out.push(Item::Violation(Violation::new(
                "syntax",
                error::BDAT_SYNTAX,
                true,
            )));
            self.close();
            return;
        }
        // RFC 4954 §4: an AUTH line, initial response included, that is too long is 5.5.6
        let canned = if self.mode == Mode::Line || verb.eq_ignore_ascii_case(b"AUTH ") {
            error::AUTH_LINE_TOO_LONG
        } else {
            error::LINE_TOO_LONG
        };
        out.push(Item::Violation(Violation::new(
            "line_too_long",
            canned,
            false,
        )));
        if self.mode == Mode::Line {
            self.mode = Mode::Paused;
        }
    }

    /// Drop the rest of an overlong line; keep a final CR that may start a CRLF.
    fn discard(&mut self, buf: &[u8], pos: usize) -> usize {
        if let Some((_, next)) = self.find_line_end(buf, pos) {
            self.discarding = false;
            return next;
        }
        if !self.cfg.normalize && buf.len() > pos && buf[buf.len() - 1] == CR {
            buf.len() - 1
        } else {
            buf.len()
        }
    }

    fn line_step(&mut self, buf: &[u8], pos: usize, out: &mut Vec<Item>) -> usize {
        let limit = self.line_limit(&buf[pos..]);
        let (end, next) = match self.find_line_end(buf, pos) {
            Some(found) => found,
            None => {
                if buf.len() - pos > limit {
                    self.too_long(&buf[pos..], out);
                    if self.mode == Mode::Closed {
                        return buf.len();
                    }
                    self.discarding = true;
                    return self.discard(buf, pos);
                }
                return pos;
            }
        };
        if next - pos > limit {
            self.too_long(&buf[pos..], out);
            return if self.mode == Mode::Closed {
                buf.len()
            } else {
                next
            };
        }
        let line = &buf[pos..end];
        if self.mode == Mode::Line {
            out.push(Item::Line(line.to_vec()));
            self.mode = Mode::Paused;
        } else {
            self.command(line, out);
        }
        next
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<Item>) {
        let is_bdat = line.len() >= 4
            && line[..4].eq_ignore_ascii_case(b"BDAT")
            && (line.len() == 4 || line[4] == b' ');
        if !is_bdat {
            self.bdat_cr = false;
        }
        let command = match parse_command(line, self.cfg.smtputf8) {
            Ok(c) => c,
            Err(e) => {
                if is_bdat {
                    // Without a size the chunk cannot be skipped: stop reading (B4).
                    out.push(Item::Violation(Violation::new(
                        "syntax",
                        error::BDAT_SYNTAX,
                        true,
                    )));
                    self.close();
                } else {
                    out.push(Item::Violation(Violation {
                        kind: Cow::Borrowed("syntax"),
                        code: e.code,
                        enhanced: Cow::Borrowed(e.enhanced),
                        text: e.text,
                        fatal: false,
                    }));
                }
                return;
            }
        };
        match command.verb.as_str() {
            "DATA" | "STARTTLS" | "AUTH" | "QUIT" => self.mode = Mode::Paused,
            "BDAT" => {
                self.bdat_remaining = command.chunk_size.unwrap_or(0);
                self.bdat_last = command.last;
                self.chunk = ChunkState::default();
                self.mode = Mode::Bdat;
            }
            _ => {}
        }
        out.push(Item::Command(command));
    }

    // -- BDAT -----------------------------------------------------------------------------

    fn bdat_step(&mut self, buf: &[u8], mut pos: usize, out: &mut Vec<Item>) -> usize {
        let available = (buf.len() - pos) as u64;
        let take = self.bdat_remaining.min(available) as usize;
        if take > 0 {
            let data = self.bdat_content(&buf[pos..pos + take]);
            self.chunk.size += data.len() as u64;
            out.push(Item::Data(data));
            self.bdat_remaining -= take as u64;
            pos += take;
        }
        if self.bdat_remaining == 0 {
            let last = self.bdat_last;
            if last && self.bdat_cr {
                self.chunk.bare_cr = true;
            }
            if last {
                self.bdat_cr = false;
            }
            let violation = if self.cfg.normalize {
                None
            } else if self.chunk.bare_lf {
                Some(Violation::new("bare_newline", error::BARE_LF, false))
            } else if self.chunk.bare_cr {
                Some(Violation::new("bare_newline", error::BARE_CR, false))
            } else {
                None
            };
            out.push(Item::DataEnd(DataEnd {
                last,
                size: self.chunk.size,
                bare_lf: self.chunk.bare_lf,
                bare_cr: self.chunk.bare_cr,
                violation,
            }));
            self.mode = Mode::Command;
        }
        pos
    }

    /// Check (and under normalize, repair) line ends; the CR state spans chunk bounds.
    fn bdat_content(&mut self, chunk: &[u8]) -> Vec<u8> {
        let normalize = self.cfg.normalize;
        let mut data = Vec::with_capacity(chunk.len());
        let mut run = 0;
        let mut pos = 0;
        while let Some(off) = memchr2(CR, LF, &chunk[pos..]) {
            let i = pos + off;
            if chunk[i] == CR {
                match chunk.get(i + 1) {
                    Some(&LF) | None => {}
                    Some(_) => self.chunk.bare_cr = true,
                }
            } else {
                let after_cr = if i == 0 {
                    self.bdat_cr
                } else {
                    chunk[i - 1] == CR
                };
                if !after_cr {
                    self.chunk.bare_lf = true;
                    if normalize {
                        data.extend_from_slice(&chunk[run..i]);
                        data.push(CR);
                        run = i;
                    }
                }
            }
            pos = i + 1;
        }
        if self.bdat_cr && chunk[0] != LF {
            self.chunk.bare_cr = true;
        }
        data.extend_from_slice(&chunk[run..]);
        self.bdat_cr = chunk[chunk.len() - 1] == CR;
        data
    }

    // -- DATA -----------------------------------------------------------------------------

    /// Account for `piece` of the unstuffed body; output it unless past a limit. The cut
    /// falls on the exact byte where a limit is crossed, so the content produced does not
    /// depend on how the input was chunked.
    fn emit(&mut self, out: &mut Vec<u8>, piece: &[u8], content: bool) {
        let d = &mut self.data;
        let n = piece.len() as u64;
        d.size += n;
        let (mut line_cut, mut size_cut) = (n, n);
        if content {
            d.line_len += n;
            if let Some(limit) = self.cfg.max_text_line {
                let room = limit as u64 - 2;
                if d.line_len > room {
                    d.long_line = true;
                    line_cut = n.saturating_sub(d.line_len - room);
                }
            }
        } else {
            d.line_len = 0;
        }
        if let Some(max) = self.cfg.max_message_size {
            if d.size > max {
                d.too_big = true;
                size_cut = n.saturating_sub(d.size - max);
            }
        }
        let cut = line_cut.min(size_cut);
        if !d.stopped {
            out.extend_from_slice(&piece[..cut as usize]);
            if cut < n {
                d.stopped = true;
                d.line_stopped = line_cut < size_cut; // the same byte: the size's
            }
        }
    }

    fn bare(&mut self, lf: bool) {
        if lf {
            self.data.bare_lf = true;
        } else {
            self.data.bare_cr = true;
        }
        if !self.cfg.normalize {
            self.data.stopped = true;
        }
    }

    fn data_step(&mut self, buf: &[u8], mut pos: usize, out: &mut Vec<Item>) -> usize {
        let mut content = Vec::new();
        let n = buf.len();
        let normalize = self.cfg.normalize;
        let mut ended = false;
        while pos < n {
            match self.data.state {
                LineState::Start => {
                    if buf[pos] == DOT {
                        self.data.state = LineState::Dot;
                        pos += 1;
                        continue;
                    }
                    let end = self.clean_lines(buf, pos, &mut content);
                    if end != pos {
                        pos = end;
                        continue;
                    }
                    self.data.state = LineState::Mid;
                }
                LineState::Dot => match buf[pos] {
                    CR => {
                        self.data.state = LineState::DotCr;
                        pos += 1;
                    }
                    LF => {
                        pos += 1;
                        self.bare(true);
                        if normalize {
                            // a "." line ending in a bare LF is dropped
                            self.data.state = LineState::Start;
                            self.data.after_bare_lf = true;
                        } else {
                            self.emit(&mut content, b"\n", true);
                            self.data.state = LineState::Mid;
                        }
                    }
                    // a stuffed dot: drop it, the line goes on
                    _ => self.data.state = LineState::Mid,
                },
                LineState::DotCr => {
                    if buf[pos] == LF {
                        pos += 1;
                        if normalize && self.data.after_bare_lf {
                            // dropped, as Postfix does
                            self.data.state = LineState::Start;
                            self.data.after_bare_lf = false;
                            continue;
                        }
                        ended = true;
                        break;
                    }
                    self.bare(false);
                    self.emit(&mut content, b"\r", true);
                    self.data.state = LineState::Mid;
                }
                LineState::Cr => {
                    if buf[pos] == LF {
                        pos += 1;
                        self.emit(&mut content, b"\r\n", false);
                        self.data.state = LineState::Start;
                        self.data.after_bare_lf = false;
                    } else {
                        self.bare(false);
                        self.emit(&mut content, b"\r", true);
                        self.data.state = LineState::Mid;
                    }
                }
                LineState::Mid => {
                    let i = match memchr2(CR, LF, &buf[pos..]) {
                        Some(off) => pos + off,
                        None => {
                            self.emit(&mut content, &buf[pos..], true);
                            pos = n;
                            break;
                        }
                    };
                    if i > pos {
                        self.emit(&mut content, &buf[pos..i], true);
                    }
                    pos = i + 1;
                    if buf[i] == CR {
                        self.data.state = LineState::Cr;
                    } else {
                        self.bare(true);
                        if normalize {
                            self.emit(&mut content, b"\r\n", false);
                            self.data.state = LineState::Start;
                            self.data.after_bare_lf = true;
                        } else {
                            self.emit(&mut content, b"\n", true);
                        }
                    }
                }
            }
        }
        if !content.is_empty() {
            out.push(Item::Data(content));
        }
        if ended {
            out.push(Item::DataEnd(self.data_end()));
            self.mode = Mode::Command;
        }
        pos
    }

    /// Fast path: whole CRLF lines that do not start with a dot, hold no bare CR/LF and
    /// cross no limit, copied in one run. Returns the new position (at a line start), or
    /// `pos` unchanged when the careful path must take the next line.
    fn clean_lines(&mut self, buf: &[u8], pos: usize, content: &mut Vec<u8>) -> usize {
        let n = buf.len();
        // Once the content has stopped, the limits decide nothing more (see the twin).
        let stopped = self.data.stopped;
        let room = self
            .cfg
            .max_text_line
            .filter(|_| !stopped)
            .map(|l| l as u64 - 2);
        let max_size = self.cfg.max_message_size.filter(|_| !stopped);
        let mut size = self.data.size;
        let mut p = pos;
        while p < n && buf[p] != DOT {
            let i = match memchr2(CR, LF, &buf[p..]) {
                Some(off) => p + off,
                None => break,
            };
            if buf[i] != CR || i + 1 >= n || buf[i + 1] != LF {
                break;
            }
            if room.is_some_and(|r| (i - p) as u64 > r) {
                break;
            }
            let next_size = size + (i + 2 - p) as u64;
            if max_size.is_some_and(|m| next_size > m) {
                break;
            }
            size = next_size;
            p = i + 2;
        }
        if p > pos {
            self.data.size = size;
            if self
                .cfg
                .max_message_size
                .is_some_and(|m| self.data.size > m)
            {
                self.data.too_big = true; // a flag only: the content stopped before this run
            }
            self.data.line_len = 0;
            self.data.after_bare_lf = false;
            if !self.data.stopped {
                content.extend_from_slice(&buf[pos..p]);
            }
        }
        p
    }

    fn data_end(&self) -> DataEnd {
        let d = &self.data;
        let reject = !self.cfg.normalize;
        let too_big = d.too_big && !(self.cfg.first_limit_wins && d.line_stopped);
        let violation = if too_big {
            Some(Violation::new(
                "message_too_big",
                error::MESSAGE_TOO_BIG,
                false,
            ))
        } else if reject && d.bare_lf {
            Some(Violation::new("bare_newline", error::BARE_LF, false))
        } else if reject && d.bare_cr {
            Some(Violation::new("bare_newline", error::BARE_CR, false))
        } else if d.long_line {
            Some(Violation::new(
                "line_too_long",
                error::TEXT_LINE_TOO_LONG,
                false,
            ))
        } else {
            None
        };
        DataEnd {
            last: true,
            size: d.size,
            bare_lf: d.bare_lf,
            bare_cr: d.bare_cr,
            violation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(normalize: bool) -> ServerReader {
        ServerReader::new(ReaderConfig {
            normalize,
            ..ReaderConfig::default()
        })
        .unwrap()
    }

    /// Feed a DATA body (after the 354) and return (content, DataEnd, the items after it).
    fn data(r: &mut ServerReader, body: &[u8]) -> (Vec<u8>, Option<DataEnd>, Vec<Item>) {
        r.feed(b"DATA\r\n");
        let items = r.expect_data().unwrap().into_iter().chain(r.feed(body));
        let mut content = Vec::new();
        let mut end = None;
        let mut after = Vec::new();
        for item in items {
            match item {
                Item::Data(d) if end.is_none() => content.extend(d),
                Item::DataEnd(e) if end.is_none() => end = Some(e),
                other => after.push(other),
            }
        }
        (content, end, after)
    }

    const SMUGGLED: &[u8] = b"MAIL FROM:<s@x>\r\nRCPT TO:<r@y>\r\nDATA\r\nS\r\n.\r\n";

    #[test]
    fn only_crlf_dot_crlf_ends_data() {
        let endings: [&[u8]; 10] = [
            b"\n.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\n",
            b"\n.\r",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
        ];
        for normalize in [false, true] {
            for ending in endings {
                let mut r = reader(normalize);
                let mut body = b"A".to_vec();
                body.extend_from_slice(ending);
                body.extend_from_slice(SMUGGLED);
                let (content, end, after) = data(&mut r, &body);
                let end = end.expect("the real end must be found");
                assert!(
                    after.is_empty(),
                    "{ending:?}: smuggled commands were parsed"
                );
                // the smuggled MAIL stays inside the body, unless the message was refused
                if end.violation.is_none() {
                    let found = memchr::memmem::find(&content, b"MAIL FROM:<s@x>").is_some();
                    assert!(found, "{ending:?} {normalize}");
                }
            }
        }
    }

    #[test]
    fn reject_and_normalize_policies() {
        let (content, end, _) = data(&mut reader(false), b"a\nb\r\n.\r\n");
        assert_eq!(end.unwrap().violation.unwrap().code, 550);
        assert_eq!(content, b"a");
        let (content, end, _) = data(&mut reader(true), b"a\n.\nb\r\n.\r\n");
        assert!(end.unwrap().violation.is_none());
        assert_eq!(content, b"a\r\nb\r\n");
        let (content, _, _) = data(&mut reader(true), b"a\rb\r\n.\r\n");
        assert_eq!(content, b"a\rb\r\n");
    }

    #[test]
    fn unstuffing() {
        let (content, end, after) = data(&mut reader(false), b"..a\r\n. \r\n..\r\n.\r\nQUIT\r\n");
        assert_eq!(content, b".a\r\n \r\n.\r\n");
        assert_eq!(end.unwrap().size, 10);
        assert!(matches!(&after[0], Item::Command(c) if c.verb == "QUIT"));
    }

    #[test]
    fn bdat_chunks_are_always_consumed() {
        let mut r = reader(false);
        let items = r.feed(b"BDAT 9 LAST\r\nMAIL FROMNOOP\r\n");
        assert!(matches!(&items[1], Item::Data(d) if d == b"MAIL FROM"));
        assert!(matches!(&items[2], Item::DataEnd(e) if e.last));
        assert!(matches!(&items[3], Item::Command(c) if c.verb == "NOOP"));
        let items = r.feed(b"BDAT x LAST\r\nNOOP\r\n");
        assert!(matches!(&items[0], Item::Violation(v) if v.fatal && v.code == 521));
        assert_eq!(items.len(), 1);
        assert_eq!(r.mode(), Mode::Closed);
    }

    #[test]
    fn overlong_command_is_discarded_without_buffering() {
        let mut r = reader(false);
        let mut items = Vec::new();
        for _ in 0..100 {
            items.extend(r.feed(&[b'x'; 10_000]));
            assert!(r.buffered() <= 1);
        }
        items.extend(r.feed(b"\r\nNOOP\r\n"));
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], Item::Violation(v) if v.kind == "line_too_long"));
    }

    #[test]
    fn an_overlong_bdat_line_stops_the_reader() {
        // Issue 10 fault 3: its chunk would otherwise be read as commands.
        for whole in [true, false] {
            let mut r = reader(false);
            let mut line = b"bdat 15 ".to_vec();
            line.extend_from_slice(&[b'X'; 600]);
            line.extend_from_slice(b"\r\nNOOP smuggled\r\n");
            let items = if whole {
                r.feed(&line)
            } else {
                let mut items = r.feed(&line[..520]);
                items.extend(r.feed(&line[520..]));
                items
            };
            assert_eq!(items.len(), 1);
            assert!(matches!(&items[0], Item::Violation(v) if v.fatal && v.code == 521));
            assert_eq!(r.mode(), Mode::Closed);
        }
    }
}
