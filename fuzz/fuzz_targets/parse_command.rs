//! `parse_command` over arbitrary bytes. Input: one flag byte (bit 0: SMTPUTF8), then
//! the line.
//!
//! Invariants:
//! - one trailing CRLF changes nothing (same command, or the same error);
//! - errors carry a 5xx reply;
//! - on success: the verb is 1-32 ASCII letters, digits and '-', upper-cased, and the line
//!   starts with it; the argument has no control characters and no surrounding spaces;
//!   `verb SP arg` parses to the same command (the tokenizing is idempotent);
//! - MAIL/RCPT carry a path and, rebuilt from their parts in canonical form
//!   (`MAIL FROM:<path> K=V ...`), parse to the same path and parameters; RCPT never has
//!   the null path;
//! - BDAT carries its size, and `BDAT n [LAST]` parses back to it; DATA, RSET, QUIT and
//!   STARTTLS have no argument.
#![no_main]

use ferrosmtp::{parse_command, Command};
use libfuzzer_sys::fuzz_target;

fn rebuild(c: &Command) -> Vec<u8> {
    let mut line = c.verb.clone().into_bytes();
    match c.verb.as_str() {
        "MAIL" | "RCPT" => {
            let path = c.path.as_ref().expect("MAIL/RCPT carry a path");
            line.extend_from_slice(if c.verb == "MAIL" { b" FROM:" } else { b" TO:" });
            line.extend_from_slice(path.to_string().as_bytes());
            for (k, v) in &c.params {
                line.push(b' ');
                line.extend_from_slice(k.as_bytes());
                if let Some(v) = v {
                    line.push(b'=');
                    line.extend_from_slice(v.as_bytes());
                }
            }
        }
        "BDAT" => {
            let n = c.chunk_size.expect("BDAT carries its size");
            line.extend_from_slice(format!(" {n}").as_bytes());
            if c.last {
                line.extend_from_slice(b" LAST");
            }
        }
        _ => {
            if !c.arg.is_empty() {
                line.push(b' ');
                line.extend_from_slice(c.arg.as_bytes());
            }
        }
    }
    line
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, line)) = data.split_first() else {
        return;
    };
    let smtputf8 = flags & 1 == 1;
    let parsed = parse_command(line, smtputf8);
    if !line.ends_with(b"\r\n") {
        // Exactly one CRLF is ignored: a second one is a control character in the line.
        let mut crlf = line.to_vec();
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_command(&crlf, smtputf8),
            parsed,
            "a trailing CRLF changed the result"
        );
    }
    let c = match parsed {
        Ok(c) => c,
        Err(e) => {
            assert!((500..=599).contains(&e.code), "{e}");
            return;
        }
    };

    let v = c.verb.as_bytes();
    assert!((1..=32).contains(&v.len()));
    assert!(v[0].is_ascii_uppercase(), "verb {:?}", c.verb);
    assert!(v
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-'));
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    assert!(line[..v.len()].eq_ignore_ascii_case(v));
    assert!(!c.arg.starts_with(' ') && !c.arg.ends_with(' '));
    assert!(!c.arg.chars().any(|ch| ch < ' ' || ch == '\x7f'));

    let mut plain = c.verb.clone();
    if !c.arg.is_empty() {
        plain.push(' ');
        plain.push_str(&c.arg);
    }
    assert_eq!(
        parse_command(plain.as_bytes(), smtputf8).as_ref(),
        Ok(&c),
        "{plain:?}"
    );

    match c.verb.as_str() {
        "MAIL" | "RCPT" => {
            let canonical = rebuild(&c);
            let again = parse_command(&canonical, smtputf8).unwrap_or_else(|e| {
                panic!(
                    "{c:?} rebuilt as {:?}: {e}",
                    String::from_utf8_lossy(&canonical)
                )
            });
            assert_eq!(again.path, c.path);
            assert_eq!(again.params, c.params);
            if c.verb == "RCPT" {
                assert!(!c.path.as_ref().unwrap().is_null());
            }
        }
        "BDAT" => {
            let again = parse_command(&rebuild(&c), smtputf8).expect("canonical BDAT");
            assert_eq!((again.chunk_size, again.last), (c.chunk_size, c.last));
        }
        "DATA" | "RSET" | "QUIT" | "STARTTLS" => assert!(c.arg.is_empty()),
        _ => {}
    }
});
