//! Tokenizing one SMTP command line (RFC 5321 §4.1, with ESMTP verbs).

use crate::address::{domain_problem, is_address_literal, parse_path_as, Path};
use crate::error::{self, CodecError};
use crate::params::{parse_params, Params};

pub const MAX_VERB: usize = 32;
pub const MAX_BDAT_DIGITS: usize = 20;

/// One parsed command line.
///
/// `verb` is upper-cased; `arg` is the text after the verb with surrounding spaces
/// removed. MAIL and RCPT carry their parsed `path` and ESMTP `params`; BDAT carries
/// `chunk_size` and `last`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub verb: String,
    pub arg: String,
    pub path: Option<Path>,
    pub params: Params,
    pub chunk_size: Option<u64>,
    pub last: bool,
}

fn is_mech_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Parse one command line (a trailing CRLF is allowed and ignored).
///
/// `smtputf8` says whether the server offers SMTPUTF8: only then may MAIL, RCPT, VRFY
/// and EXPN carry UTF-8, and a MAIL path only with the `SMTPUTF8` parameter.
pub fn parse_command(line: &[u8], smtputf8: bool) -> Result<Command, CodecError> {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    if line.is_empty() {
        return Err(error::EMPTY_COMMAND.into());
    }
    if line.iter().any(|&b| b < 0x20 || b == 0x7F) {
        return Err(error::BAD_CHARACTER.into());
    }
    let (verb_bytes, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    if verb_bytes.is_empty()
        || verb_bytes.len() > MAX_VERB
        || !verb_bytes[0].is_ascii_alphabetic()
        || !verb_bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(error::BAD_VERB.into());
    }
    let mut verb = String::with_capacity(verb_bytes.len());
    verb.extend(verb_bytes.iter().map(|&b| b.to_ascii_uppercase() as char));
    let arg = decode_argument(&verb, trim_spaces(rest), smtputf8)?;

    match verb.as_str() {
        "HELO" | "EHLO" | "LHLO" => check_hello(&verb, &arg)?,
        "MAIL" | "RCPT" => return parse_mail_rcpt(verb, arg, smtputf8),
        "DATA" | "RSET" | "QUIT" | "STARTTLS" if !arg.is_empty() => {
            return Err(CodecError::usage(&verb));
        }
        "VRFY" | "EXPN" if arg.is_empty() => return Err(CodecError::usage(&verb)),
        "AUTH" => {
            let mut words = arg.split(' ').filter(|w| !w.is_empty());
            let mech = words.next().unwrap_or("");
            let extra = words.count();
            if extra > 1 {
                return Err(error::AUTH_TOO_MANY.into());
            }
            if mech.is_empty() || mech.len() > 20 || extra > 1 || !mech.chars().all(is_mech_char) {
                return Err(CodecError::usage(&verb));
            }
        }
        "BDAT" => return parse_bdat(arg),
        _ => {}
    }
    Ok(Command {
        verb,
        arg,
        ..Command::default()
    })
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

fn decode_argument(verb: &str, raw: &[u8], smtputf8: bool) -> Result<String, CodecError> {
    if !raw.is_ascii() {
        match verb {
            "MAIL" | "RCPT" if !smtputf8 => return Err(error::NEED_UTF8.into()),
            "MAIL" | "RCPT" => {}
            "VRFY" | "EXPN" if smtputf8 => {}
            _ => return Err(error::EIGHT_BIT.into()),
        }
    }
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Err(error::BAD_UTF8.into()),
    }
}

fn check_hello(verb: &str, arg: &str) -> Result<(), CodecError> {
    if arg.is_empty() || arg.contains(' ') {
        return Err(CodecError::usage(verb));
    }
    let valid = if arg.starts_with('[') {
        is_address_literal(arg)
    } else {
        domain_problem(arg, true).is_none()
    };
    if valid {
        Ok(())
    } else {
        Err(error::BAD_DOMAIN.into())
    }
}

fn parse_mail_rcpt(verb: String, arg: String, smtputf8: bool) -> Result<Command, CodecError> {
    let prefix = if verb == "MAIL" { "FROM:" } else { "TO:" };
    let rest = match arg.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => arg[prefix.len()..].trim_start_matches(' '),
        _ => return Err(CodecError::usage(&verb)),
    };
    if rest.is_empty() {
        return Err(CodecError::usage(&verb));
    }
    let (path_text, params_text) = split_path(&verb, rest)?;
    let params = parse_params(params_text, smtputf8)?;
    let path = if verb == "MAIL" {
        // RFC 6531 §3.4: the SMTPUTF8 parameter on this very line permits a UTF-8 path.
        let utf8_path = smtputf8 && params.iter().any(|(k, _)| k == "SMTPUTF8");
        parse_path_as(path_text, utf8_path, error::SENDER_PREFIX)?
    } else {
        // Whether this transaction declared SMTPUTF8 is the protocol's to check.
        let path = parse_path_as(path_text, smtputf8, error::RECIPIENT_PREFIX)?;
        if path.is_null() {
            return Err(CodecError::with_reason(
                error::RECIPIENT_PREFIX,
                "null path not allowed",
            ));
        }
        path
    };
    Ok(Command {
        verb,
        arg,
        path: Some(path),
        params,
        ..Command::default()
    })
}

/// Split `<path> params` at the '>' that closes the path (quotes can hide a '>').
fn split_path<'a>(verb: &str, rest: &'a str) -> Result<(&'a str, &'a str), CodecError> {
    let b = rest.as_bytes();
    if b[0] != b'<' {
        return Ok(rest.split_once(' ').unwrap_or((rest, "")));
    }
    let mut in_quote = false;
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b'>' {
            let params = &rest[i + 1..];
            if !params.is_empty() && !params.starts_with(' ') {
                return Err(CodecError::usage(verb));
            }
            return Ok((&rest[..i + 1], params));
        }
        i += 1;
    }
    Ok((rest, ""))
}

fn parse_bdat(arg: String) -> Result<Command, CodecError> {
    let words: Vec<&str> = arg.split(' ').filter(|w| !w.is_empty()).collect();
    let bad = || CodecError::usage("BDAT");
    if words.is_empty() || words.len() > 2 {
        return Err(bad());
    }
    let size = words[0];
    if size.is_empty() || size.len() > MAX_BDAT_DIGITS || !size.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let chunk_size: u64 = size.parse().map_err(|_| bad())?;
    let last = words.len() == 2;
    if last && !words[1].eq_ignore_ascii_case("LAST") {
        return Err(bad());
    }
    Ok(Command {
        verb: "BDAT".into(),
        arg,
        chunk_size: Some(chunk_size),
        last,
        ..Command::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &[u8]) -> Command {
        parse_command(line, true).unwrap()
    }

    fn code(line: &[u8]) -> (u16, &'static str) {
        let e = parse_command(line, false).unwrap_err();
        (e.code, e.enhanced)
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(ok(b"mail from:<a@b>\r\n").verb, "MAIL");
        assert_eq!(ok(b"ehlo client.example").arg, "client.example");
        assert_eq!(ok(b"XCLIENT  ADDR=1 ").arg, "ADDR=1");
    }

    #[test]
    fn mail_and_rcpt() {
        let c = ok(b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME");
        assert_eq!(c.path.unwrap().address(), "a@b.example");
        assert_eq!(c.params[0], ("SIZE".into(), Some("10".into())));
        assert!(ok(b"MAIL FROM:<>").path.unwrap().is_null());
        assert_eq!(ok(b"MAIL FROM: <x@y>").path.unwrap().local_part, "x");
        assert_eq!(
            ok(br#"RCPT TO:<"a>b"@c> NOTIFY=NEVER"#)
                .path
                .unwrap()
                .local_part,
            "a>b"
        );
        assert_eq!(code(b"RCPT TO:<>"), (501, "5.1.3"));
        assert_eq!(code(b"MAIL FROM:<a b>"), (501, "5.1.7"));
        assert_eq!(code(b"MAIL TO:<a@b>"), (501, "5.5.4"));
        assert_eq!(code(b"MAIL FROM:<a@b>SIZE=1"), (501, "5.5.4"));
        assert_eq!(code("MAIL FROM:<δ@x>".as_bytes()), (553, "5.6.7"));
        let e = parse_command("MAIL FROM:<δ@x>".as_bytes(), true).unwrap_err();
        assert_eq!(e.code, 553);
        assert!(parse_command("MAIL FROM:<δ@x> SMTPUTF8".as_bytes(), true).is_ok());
    }

    #[test]
    fn bad_lines() {
        assert_eq!(code(b""), (500, "5.5.2"));
        assert_eq!(code(b"NO\0OP"), (500, "5.5.2"));
        assert_eq!(code(b"1NOOP"), (500, "5.5.2"));
        assert_eq!(code(b"DATA x"), (501, "5.5.4"));
        assert_eq!(code(b"EHLO (a)"), (501, "5.5.2"));
        assert_eq!(code(b"EHLO"), (501, "5.5.4"));
        assert_eq!(code(b"AUTH"), (501, "5.5.4"));
        assert_eq!(code(b"NOOP \xff"), (500, "5.5.2"));
        assert_eq!(code(b"VRFY \xc0\xaf"), (500, "5.5.2"));
        assert_eq!(parse_command(b"VRFY \xc0\xaf", true).unwrap_err().code, 501);
    }

    #[test]
    fn bdat() {
        let c = ok(b"BDAT 100 last");
        assert_eq!((c.chunk_size, c.last), (Some(100), true));
        assert_eq!(ok(b"BDAT 0").chunk_size, Some(0));
        for bad in [
            &b"BDAT"[..],
            b"BDAT x",
            b"BDAT -1",
            b"BDAT 1 FIRST",
            b"BDAT 99999999999999999999",
        ] {
            assert_eq!(code(bad), (501, "5.5.4"), "{:?}", bad);
        }
    }
}
