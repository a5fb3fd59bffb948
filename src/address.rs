//! RFC 5321 §4.1.2 paths, domains and address literals (RFC 6531 under SMTPUTF8).

use crate::error::{self, Canned, CodecError};

pub const MAX_LOCAL_PART: usize = 64; // octets, RFC 5321 §4.5.3.1.1
pub const MAX_DOMAIN: usize = 255; // octets, §4.5.3.1.2
pub const MAX_LABEL: usize = 63; // octets, RFC 1035 §2.3.4
pub const MAX_PATH: usize = 256; // octets including the angle brackets, §4.5.3.1.3

/// A parsed reverse- or forward-path.
///
/// `local_part` is semantic (quotes and escapes removed); `domain` is the domain or
/// address literal as sent; `source_route` holds the domains of a deprecated source
/// route, which RFC 5321 says to accept and ignore. The null path `<>` has an empty
/// local part and domain; `<Postmaster>` has an empty domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path {
    pub local_part: String,
    pub domain: String,
    pub source_route: Vec<String>,
}

impl Path {
    pub fn is_null(&self) -> bool {
        self.local_part.is_empty() && self.domain.is_empty()
    }

    pub fn is_postmaster(&self) -> bool {
        self.domain.is_empty() && self.local_part.eq_ignore_ascii_case("postmaster")
    }

    /// The mailbox as `local@domain`, quoting the local part only where needed.
    pub fn address(&self) -> String {
        if self.domain.is_empty() {
            return self.local_part.clone();
        }
        let mut out = String::with_capacity(self.local_part.len() + self.domain.len() + 3);
        if is_dot_string(&self.local_part) {
            out.push_str(&self.local_part);
        } else {
            out.push('"');
            for c in self.local_part.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        out.push('@');
        out.push_str(&self.domain);
        out
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<")?;
        for (i, hop) in self.source_route.iter().enumerate() {
            f.write_str(if i == 0 { "@" } else { ",@" })?;
            f.write_str(hop)?;
        }
        if !self.source_route.is_empty() {
            f.write_str(":")?;
        }
        f.write_str(&self.address())?;
        f.write_str(">")
    }
}

/// Non-ASCII code points refused even under SMTPUTF8: C1 controls, zero-width and bidi
/// formatting characters, line/paragraph separators, BOM and noncharacters. They let two
/// addresses look alike or reorder text in logs (an opinion, see checklist B16).
fn allowed_non_ascii(c: char) -> bool {
    let o = c as u32;
    o >= 0x80
        && !matches!(o,
            0x80..=0x9F | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F
            | 0xD800..=0xDFFF | 0xFEFF | 0xFFFE..=0xFFFF)
}

pub(crate) fn allowed_non_ascii_char(c: char) -> bool {
    allowed_non_ascii(c)
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || allowed_non_ascii(c)
}

fn is_qtext(c: char) -> bool {
    // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii (RFC 6531)
    (matches!(c, ' '..='~') && c != '"' && c != '\\') || allowed_non_ascii(c)
}

/// Dot-string = Atom *("." Atom); non-ASCII atext counts (callers gate SMTPUTF8).
pub fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_label(label: &str, allow_underscore: bool) -> bool {
    let let_dig = |c: char| {
        c.is_ascii_alphanumeric() || allowed_non_ascii(c) || (allow_underscore && c == '_')
    };
    let mut chars = label.chars();
    let first = match chars.next() {
        Some(c) => c,
        None => return false,
    };
    let last = chars.next_back().unwrap_or(first);
    let_dig(first) && let_dig(last) && chars.all(|c| let_dig(c) || c == '-')
}

/// Why `domain` is not an RFC 5321 Domain, or None if it is one.
///
/// `allow_underscore` is the lenient form used for HELO/EHLO names, where hosts with `_`
/// in their names are common in practice.
pub fn domain_problem(domain: &str, allow_underscore: bool) -> Option<&'static str> {
    if domain.is_empty() {
        return Some("invalid domain");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Some("invalid domain");
        }
        if label.len() > MAX_LABEL {
            return Some("domain label too long");
        }
        if !is_label(label, allow_underscore) {
            return Some("invalid domain");
        }
    }
    if domain.len() > MAX_DOMAIN {
        return Some("domain too long");
    }
    None
}

/// IPv4-address-literal = Snum 3("." Snum), without leading zeros.
pub fn is_ipv4_literal(s: &str) -> bool {
    let mut count = 0;
    for part in s.split('.') {
        count += 1;
        if count > 4 || part.is_empty() || part.len() > 3 {
            return false;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if part.len() > 1 && part.as_bytes()[0] == b'0' {
            return false;
        }
        if part.parse::<u16>().map_or(true, |v| v > 255) {
            return false;
        }
    }
    count == 4
}

/// Count colon-separated 1-4 digit hex groups; None if any group is malformed.
fn hex_groups(s: &str) -> Option<usize> {
    if s.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    for g in s.split(':') {
        if g.is_empty() || g.len() > 4 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        count += 1;
    }
    Some(count)
}

/// IPv6-addr of RFC 5321 §4.1.3 (full, compressed and IPv4-embedded forms; no zones).
pub fn is_ipv6_literal(s: &str) -> bool {
    let has_v4 = s.contains('.');
    let mut head = s;
    if has_v4 {
        let colon = match s.rfind(':') {
            Some(c) => c,
            None => return false,
        };
        if !is_ipv4_literal(&s[colon + 1..]) {
            return false;
        }
        head = &s[..colon + 1];
        // keep a "::" that directly precedes the IPv4 part, drop a single separator colon
        if !head.ends_with("::") {
            head = &head[..head.len() - 1];
        }
    }
    if let Some((left, right)) = head.split_once("::") {
        return match (hex_groups(left), hex_groups(right)) {
            (Some(l), Some(r)) => l + r <= if has_v4 { 4 } else { 6 },
            _ => false,
        };
    }
    hex_groups(head) == Some(if has_v4 { 6 } else { 8 })
}

/// `[IPv4]` or `[IPv6:...]`; General-address-literals have no registered tag.
pub fn is_address_literal(s: &str) -> bool {
    if s.len() < 2 || !s.starts_with('[') || !s.ends_with(']') {
        return false;
    }
    let content = &s[1..s.len() - 1];
    if is_ipv4_literal(content) {
        return true;
    }
    match (content.get(..5), content.get(5..)) {
        (Some(tag), Some(rest)) if tag.eq_ignore_ascii_case("ipv6:") => is_ipv6_literal(rest),
        _ => false,
    }
}

/// Parse an RFC 5321 path: `<local@domain>`, `<>`, `<Postmaster>`, a source-routed
/// `<@a,@b:local@domain>`, or a bare `local@domain`.
pub fn parse_path(text: &str, smtputf8: bool) -> Result<Path, CodecError> {
    parse_path_as(text, smtputf8, error::ADDRESS_PREFIX)
}

/// `parse_path`, with errors worded for a sender, a recipient or a bare address.
pub fn parse_path_as(text: &str, smtputf8: bool, prefix: Canned) -> Result<Path, CodecError> {
    parse(text, smtputf8).map_err(|e| match e {
        Problem::Reason(reason) => CodecError::with_reason(prefix, reason),
        Problem::Refused(canned) => canned.into(),
    })
}

enum Problem {
    Reason(&'static str),
    Refused(Canned),
}

use Problem::Reason;

fn parse(text: &str, smtputf8: bool) -> Result<Path, Problem> {
    if text.is_empty() {
        return Err(Reason("empty address"));
    }
    let mut wire = text.len();
    let bracketed = text.starts_with('<');
    let inner = if bracketed {
        if text.len() < 2 || !text.ends_with('>') {
            return Err(Reason("unbalanced angle brackets"));
        }
        &text[1..text.len() - 1]
    } else {
        wire += 2;
        text
    };
    if wire > MAX_PATH {
        return Err(Reason("path too long"));
    }
    if !smtputf8 && !text.is_ascii() {
        return Err(Problem::Refused(error::NEED_UTF8));
    }
    if inner.is_empty() {
        return Ok(Path::default());
    }

    let mut mailbox = inner;
    let mut route = Vec::new();
    if inner.starts_with('@') {
        let colon = match inner.find(':') {
            Some(c) if bracketed => c,
            _ => return Err(Reason("invalid source route")),
        };
        for hop in inner[..colon].split(',') {
            match hop.strip_prefix('@') {
                Some(domain) if domain_problem(domain, false).is_none() => {
                    route.push(domain.to_string())
                }
                _ => return Err(Reason("invalid source route")),
            }
        }
        mailbox = &inner[colon + 1..];
    } else if mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(Path {
            local_part: mailbox.to_string(),
            ..Path::default()
        });
    }

    let (local, end) = if mailbox.starts_with('"') {
        quoted_local_part(mailbox)?
    } else {
        let end = mailbox.find('@').ok_or(Reason("missing domain"))?;
        let local = &mailbox[..end];
        if !is_dot_string(local) {
            return Err(Reason("invalid local part"));
        }
        (local.to_string(), end)
    };
    if end > MAX_LOCAL_PART {
        return Err(Reason("local part too long"));
    }

    let domain = &mailbox[end + 1..];
    if domain.starts_with('[') {
        if !is_address_literal(domain) {
            return Err(Reason("invalid address literal"));
        }
    } else if let Some(problem) = domain_problem(domain, false) {
        return Err(Reason(problem));
    }
    Ok(Path {
        local_part: local,
        domain: domain.to_string(),
        source_route: route,
    })
}

/// Unquote `"..."` at the start of mailbox; return it and the byte index of the '@'.
fn quoted_local_part(mailbox: &str) -> Result<(String, usize), Problem> {
    let mut local = String::new();
    let mut chars = mailbox.char_indices().skip(1);
    let end = loop {
        match chars.next() {
            None => return Err(Reason("unterminated quoted string")),
            Some((_, '\\')) => match chars.next() {
                None => return Err(Reason("unterminated quoted string")),
                Some((_, c)) if matches!(c, ' '..='~') => local.push(c),
                Some(_) => return Err(Reason("invalid character in quoted string")),
            },
            Some((i, '"')) => break i + 1,
            Some((_, c)) if is_qtext(c) => local.push(c),
            Some(_) => return Err(Reason("invalid character in quoted string")),
        }
    };
    match mailbox.as_bytes().get(end) {
        None => Err(Reason("missing domain")),
        Some(b'@') => Ok((local, end)),
        Some(_) => Err(Reason("invalid local part")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Path {
        parse_path(s, true).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_path(s, true).unwrap_err().text.into_owned()
    }

    #[test]
    fn simple_and_special_paths() {
        assert_eq!(ok("<a@b.example>").address(), "a@b.example");
        assert!(ok("<>").is_null());
        assert!(ok("<Postmaster>").is_postmaster());
        assert_eq!(ok("bare@x.example").domain, "x.example");
        let p = ok("<@a.example,@b.example:user@c.example>");
        assert_eq!(p.source_route, vec!["a.example", "b.example"]);
        assert_eq!(p.to_string(), "<@a.example,@b.example:user@c.example>");
    }

    #[test]
    fn quoted_local_parts_round_trip() {
        let p = ok(r#"<"a@b"@c.example>"#);
        assert_eq!(p.local_part, "a@b");
        assert_eq!(p.to_string(), r#"<"a@b"@c.example>"#);
        assert_eq!(ok(r#"<"a\"b"@x>"#).local_part, "a\"b");
        assert_eq!(ok(r#"<"ab"@x>"#).to_string(), "<ab@x>");
        assert!(err("<\"unterminated@x>").contains("unterminated"));
        assert!(err("<\"\u{1}\"@x>").contains("invalid character"));
    }

    #[test]
    fn literals() {
        for good in [
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "[IPv6:::ffff:192.0.2.1]",
            "[ipv6:1:2:3:4:5:6:7:8]",
            "[IPv6:1:2:3:4:5:6:1.2.3.4]",
            "[IPv6:::]",
        ] {
            assert!(is_address_literal(good), "{good}");
        }
        for bad in [
            "[256.1.1.1]",
            "[IPv6:2001:db8::1::2]",
            "[IPv6:fe80::1%25eth0]",
            "[1.2.3]",
            "[foo:bar]",
            "[010.0.0.1]",
            "[IPv6:1:2:3:4:5:6:7::]",
            "[IPv6:1:2:3:4:5:6:7:8:9]",
        ] {
            assert!(!is_address_literal(bad), "{bad}");
        }
    }

    #[test]
    fn limits() {
        let local = "a".repeat(64);
        assert!(parse_path(&format!("<{local}@x.example>"), false).is_ok());
        assert!(err(&format!("<{local}a@x.example>")).ends_with("local part too long"));
        assert!(err(&format!("<a@{}.example>", "b".repeat(64))).ends_with("label too long"));
        let long = format!("<a@{}>", vec!["b".repeat(60); 5].join("."));
        assert!(err(&long).ends_with("path too long"));
        // 22 three-byte characters are 66 octets
        assert!(err(&format!("<{}@x.example>", "€".repeat(22))).ends_with("too long"));
        assert!(parse_path(&format!("<{}a@x.example>", "€".repeat(21)), true).is_ok());
    }

    #[test]
    fn utf8_needs_smtputf8() {
        let e = parse_path("<δοκιμή@παράδειγμα.δοκιμή>", false).unwrap_err();
        assert_eq!((e.code, e.enhanced), (553, "5.6.7"));
        assert!(parse_path("<δοκιμή@παράδειγμα.δοκιμή>", true).is_ok());
        assert!(parse_path("<a\u{202e}b@x>", true).is_err());
    }

    #[test]
    fn bad_routes() {
        for bad in ["<@:user@c>", "<@a,@b user@c>", "<@a@b:user@c>", "@a:b@c"] {
            assert!(err(bad).contains("source route") || err(bad).contains("local part"));
        }
    }
}
