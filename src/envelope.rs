//! The client's side of an envelope: MAIL FROM and RCPT TO lines, built from addresses and
//! ESMTP parameters a caller gives, checked so that nothing can change a line's meaning.
//!
//! Addresses are parsed with the server's own parser ([`crate::address::parse_path`]) and
//! re-serialized (a source route is dropped: RFC 5321 §4.1.2 says clients SHOULD NOT send
//! them); parameters must match the RFC 5321 grammar (UTF-8 values only under SMTPUTF8,
//! checked by [`crate::params::parse_params`]); no line carries a control character. One
//! call formats a whole envelope, so a client pays one crossing per message, not one per
//! command.

use crate::address;
use crate::params;

/// Whose address an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sender,
    Recipient,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Recipient => "recipient",
        }
    }
}

/// Why an envelope cannot be sent. The bindings word these (quoting the caller's text as
/// Python's `repr` does); `python/ferrosmtp/_pure/envelope.py` words them the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// CR, LF, NUL or another control character in an address.
    Control(Role),
    /// A non-ASCII address without SMTPUTF8.
    NotAscii(Role),
    /// The address does not parse: the text as given, and the parser's reason.
    Invalid(Role, String, String),
    /// `<Postmaster>` as the sender.
    PostmasterSender,
    /// `<>` as a recipient.
    NullRecipient,
    /// A parameter keyword that is not `(ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`.
    BadKeyword(String),
    /// A keyword given twice (upper-cased).
    Duplicate(String),
    /// A value outside `1*(%d33-60 / %d62-126)` (UTF-8 allowed under SMTPUTF8).
    BadValue(String, String),
    /// The last guard: a finished line holds a control character (the verb).
    LineControl(&'static str),
    /// An argument the bindings refused before it reached Rust (not a str, not UTF-8),
    /// with their message: reported in its turn, so that the first problem in the
    /// envelope's order is the one raised, whichever backend runs.
    Given(String),
}

impl EnvelopeError {
    /// The message, with `quote` standing for the caller's language's quoting of text.
    pub fn message(&self, quote: &dyn Fn(&str) -> String) -> String {
        match self {
            EnvelopeError::Control(role) => format!(
                "the {} address contains CR, LF, NUL or another control character",
                role.name()
            ),
            EnvelopeError::NotAscii(role) => {
                format!(
                    "the {} address is not ASCII: it needs SMTPUTF8",
                    role.name()
                )
            }
            EnvelopeError::Invalid(role, text, reason) => {
                format!(
                    "invalid {} address {}: {}",
                    role.name(),
                    quote(text),
                    reason
                )
            }
            EnvelopeError::PostmasterSender => {
                "the sender must be a mailbox or <>, not <Postmaster>".to_string()
            }
            EnvelopeError::NullRecipient => "a recipient cannot be the null path <>".to_string(),
            EnvelopeError::BadKeyword(key) => {
                format!("invalid ESMTP parameter keyword: {}", quote(key))
            }
            EnvelopeError::Duplicate(key) => format!("ESMTP parameter {key} given twice"),
            EnvelopeError::BadValue(key, value) => {
                format!("invalid value for ESMTP parameter {key}: {}", quote(value))
            }
            EnvelopeError::LineControl(verb) => {
                format!("{verb} argument contains CR, LF, NUL or another control character")
            }
            EnvelopeError::Given(message) => message.clone(),
        }
    }
}

/// An argument as the caller gave it: text, or already refused by the bindings.
pub type Arg<'a> = Result<&'a str, EnvelopeError>;

/// One parameter as a caller gives it: keyword as written, value (None: no `=`).
pub type Param<'a> = (Arg<'a>, Option<Arg<'a>>);

fn is_control(c: char) -> bool {
    c < ' ' || c == '\x7f'
}

/// The address as it goes on the wire (`local@domain`, or "" for `<>`), and whether it
/// is the null path and `<Postmaster>`.
pub fn canonical_address(
    text: &str,
    smtputf8: bool,
    role: Role,
) -> Result<(String, bool, bool), EnvelopeError> {
    if text.chars().any(is_control) {
        return Err(EnvelopeError::Control(role));
    }
    if !smtputf8 && !text.is_ascii() {
        return Err(EnvelopeError::NotAscii(role));
    }
    let parsed = if text.starts_with('<') {
        address::parse_path(text, smtputf8)
    } else {
        let mut bracketed = String::with_capacity(text.len() + 2);
        bracketed.push('<');
        bracketed.push_str(text);
        bracketed.push('>');
        address::parse_path(&bracketed, smtputf8)
    };
    match parsed {
        Ok(path) => Ok((path.address(), path.is_null(), path.is_postmaster())),
        Err(e) => Err(EnvelopeError::Invalid(
            role,
            text.to_string(),
            e.text.into_owned(),
        )),
    }
}

fn is_keyword(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

fn is_ascii_value(value: &str) -> bool {
    // esmtp-value = 1*(%d33-60 / %d62-126)
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

/// ` KEY=value KEY2` (with its leading space; "" without parameters), keywords as given.
pub fn format_params(params: &[Param<'_>], smtputf8: bool) -> Result<String, EnvelopeError> {
    let mut out = String::new();
    let mut seen: Vec<&str> = Vec::with_capacity(params.len());
    for (key, value) in params {
        let key = key.clone()?;
        if !is_keyword(key) {
            return Err(EnvelopeError::BadKeyword(key.to_string()));
        }
        if seen.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(EnvelopeError::Duplicate(key.to_ascii_uppercase()));
        }
        out.push(' ');
        out.push_str(key);
        if let Some(value) = value {
            let value = value.clone()?;
            if !(is_ascii_value(value) || (smtputf8 && utf8_value_ok(key, value))) {
                return Err(EnvelopeError::BadValue(key.to_string(), value.to_string()));
            }
            out.push('=');
            out.push_str(value);
        }
        seen.push(key);
    }
    Ok(out)
}

/// A non-ASCII value under SMTPUTF8: what the server's `parse_params` reads back as it is.
fn utf8_value_ok(key: &str, value: &str) -> bool {
    !value.is_ascii()
        && params::parse_params(&format!("{key}={value}"), true).is_ok_and(|p| {
            p.len() == 1 && p[0].0.eq_ignore_ascii_case(key) && p[0].1.as_deref() == Some(value)
        })
}

/// `VERB prefix<address>params` and CRLF, checked for control characters: the last guard
/// against injection (whatever built the pieces, a command line never carries one).
fn line(verb: &'static str, address: &str, params: &str) -> Result<Vec<u8>, EnvelopeError> {
    let prefix: &[u8] = if verb == "MAIL" {
        b"MAIL FROM:<"
    } else {
        b"RCPT TO:<"
    };
    let mut out = Vec::with_capacity(prefix.len() + address.len() + params.len() + 3);
    out.extend_from_slice(prefix);
    out.extend_from_slice(address.as_bytes());
    out.push(b'>');
    out.extend_from_slice(params.as_bytes());
    if out.iter().any(|&b| b < b' ' || b == 0x7f) {
        return Err(EnvelopeError::LineControl(verb));
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The MAIL FROM line of `sender` (`None`: none) and one RCPT TO line per recipient, each
/// with the canonical address it carries, in that order. The same parameters go on every
/// RCPT. Everything is checked before anything is returned.
pub fn format_envelope(
    sender: Option<Arg<'_>>,
    recipients: &[Arg<'_>],
    mail_params: &[Param<'_>],
    rcpt_params: &[Param<'_>],
    smtputf8: bool,
) -> Result<Vec<(String, Vec<u8>)>, EnvelopeError> {
    let mut out = Vec::with_capacity(recipients.len() + 1);
    if let Some(sender) = sender {
        let (address, _, postmaster) = canonical_address(sender?, smtputf8, Role::Sender)?;
        if postmaster {
            return Err(EnvelopeError::PostmasterSender);
        }
        let text = format_params(mail_params, smtputf8)?;
        let line = line("MAIL", &address, &text)?;
        out.push((address, line));
    }
    let mut text: Option<String> = None; // the parameters, checked after the first address
    for recipient in recipients {
        let (address, null, _) = canonical_address(recipient.clone()?, smtputf8, Role::Recipient)?;
        if null {
            return Err(EnvelopeError::NullRecipient);
        }
        if text.is_none() {
            text = Some(format_params(rcpt_params, smtputf8)?);
        }
        let line = line("RCPT", &address, text.as_deref().unwrap_or_default())?;
        out.push((address, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(s: &str) -> String {
        format!("'{s}'")
    }

    fn params<'a>(p: &[(&'a str, Option<&'a str>)]) -> Vec<Param<'a>> {
        p.iter().map(|&(k, v)| (Ok(k), v.map(Ok))).collect()
    }

    fn format(
        sender: Option<&str>,
        recipients: &[&str],
        mail: &[(&str, Option<&str>)],
        rcpt: &[(&str, Option<&str>)],
        smtputf8: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, EnvelopeError> {
        let recipients: Vec<Arg<'_>> = recipients.iter().map(|&r| Ok(r)).collect();
        format_envelope(
            sender.map(Ok),
            &recipients,
            &params(mail),
            &params(rcpt),
            smtputf8,
        )
    }

    #[test]
    fn lines_and_addresses() {
        let got = format(
            Some("<a@example.org>"),
            &["b@example.org", "<@relay.example:c@example.org>"],
            &[("size", Some("1024")), ("BODY", Some("8BITMIME"))],
            &[("NOTIFY", Some("NEVER"))],
            false,
        )
        .unwrap();
        assert_eq!(got[0].0, "a@example.org");
        assert_eq!(
            got[0].1,
            b"MAIL FROM:<a@example.org> size=1024 BODY=8BITMIME\r\n"
        );
        assert_eq!(got[1].1, b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n");
        assert_eq!(got[2].0, "c@example.org"); // the source route is dropped
        let null = format(Some(""), &[], &[], &[], false).unwrap();
        assert_eq!(null[0].1, b"MAIL FROM:<>\r\n");
        let quoted = format(None, &["\"a b\"@example.org"], &[], &[], false).unwrap();
        assert_eq!(quoted[0].1, b"RCPT TO:<\"a b\"@example.org>\r\n");
    }

    #[test]
    fn refusals() {
        let err = |s: Option<&str>, r: &[&str], m: &[(&str, Option<&str>)], u: bool| {
            format(s, r, m, &[], u).unwrap_err()
        };
        assert_eq!(
            err(Some("a@b\r\nRCPT TO:<c@d>"), &[], &[], false),
            EnvelopeError::Control(Role::Sender)
        );
        assert_eq!(
            err(Some("é@b.example"), &[], &[], false),
            EnvelopeError::NotAscii(Role::Sender)
        );
        assert_eq!(
            err(Some("Postmaster"), &[], &[], false),
            EnvelopeError::PostmasterSender
        );
        assert_eq!(err(None, &["<>"], &[], false), EnvelopeError::NullRecipient);
        assert!(matches!(
            err(Some("a@"), &[], &[], false),
            EnvelopeError::Invalid(Role::Sender, _, _)
        ));
        assert_eq!(
            err(Some("a@b.example"), &[], &[("X=Y", None)], false),
            EnvelopeError::BadKeyword("X=Y".into())
        );
        assert_eq!(
            err(
                Some("a@b.example"),
                &[],
                &[("size", Some("1")), ("SIZE", Some("2"))],
                false
            ),
            EnvelopeError::Duplicate("SIZE".into())
        );
        for value in ["a b", "a=b", "", "x\r\n", "é"] {
            assert!(matches!(
                err(Some("a@b.example"), &[], &[("ENVID", Some(value))], false),
                EnvelopeError::BadValue(_, _)
            ));
        }
        let ok = format(Some("a@b.example"), &[], &[("ENVID", Some("é"))], &[], true);
        assert!(ok.is_ok());
        assert_eq!(
            EnvelopeError::Invalid(Role::Recipient, "x".into(), "why".into()).message(&quote),
            "invalid recipient address 'x': why"
        );
    }
}
