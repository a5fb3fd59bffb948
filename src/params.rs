//! ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2) and xtext (RFC 3461 §4).

use crate::address::allowed_non_ascii_char;
use crate::error::{self, CodecError};

/// Parameters in the order sent: keyword upper-cased, value as sent (None without `=`).
pub type Params = Vec<(String, Option<String>)>;

fn is_value_char(c: char, smtputf8: bool) -> bool {
    // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii under SMTPUTF8 (RFC 6531)
    match c {
        '!'..='~' => c != '=',
        _ => smtputf8 && allowed_non_ascii_char(c),
    }
}

fn is_keyword(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Parse `KEY[=value]` words separated by spaces; a keyword given twice is refused.
pub fn parse_params(text: &str, smtputf8: bool) -> Result<Params, CodecError> {
    let mut params: Params = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if !is_keyword(key) {
            return Err(error::BAD_PARAMS.into());
        }
        if let Some(v) = value {
            if v.is_empty() || !v.chars().all(|c| is_value_char(c, smtputf8)) {
                return Err(error::BAD_PARAMS.into());
            }
        }
        let key = key.to_ascii_uppercase();
        if params.iter().any(|(k, _)| *k == key) {
            return Err(error::DUPLICATE_PARAM.into());
        }
        params.push((key, value.map(str::to_string)));
    }
    Ok(params)
}

/// Decode RFC 3461 xtext (`+XX` hex escapes) to the UTF-8 string it encodes.
pub fn xtext_decode(text: &str) -> Result<String, CodecError> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'+' {
            let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(error::BAD_XTEXT.into()),
            }
            i += 3;
        } else if (b'!'..=b'~').contains(&c) && c != b'=' {
            out.push(c);
            i += 1;
        } else {
            return Err(error::BAD_XTEXT.into());
        }
    }
    String::from_utf8(out).map_err(|_| error::BAD_XTEXT.into())
}

/// Encode a string as RFC 3461 xtext: octets outside `!`..`~`, `+` and `=` become `+XX`.
pub fn xtext_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push('+');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = parse_params("SIZE=100  body=8BITMIME SMTPUTF8", false).unwrap();
        assert_eq!(
            p,
            vec![
                ("SIZE".into(), Some("100".into())),
                ("BODY".into(), Some("8BITMIME".into())),
                ("SMTPUTF8".into(), None)
            ]
        );
        assert!(parse_params("SIZE=1 size=2", false).is_err());
        assert!(parse_params("SIZE=", false).is_err());
        assert!(parse_params("-X=1", false).is_err());
        assert!(parse_params("X=a=b", false).is_err());
        assert!(parse_params("X=é", false).is_err());
        assert!(parse_params("X=é", true).is_ok());
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb+3D").unwrap(), "a+b=");
        assert_eq!(xtext_encode("a+b= é"), "a+2Bb+3D+20+C3+A9");
        assert_eq!(
            xtext_decode(&xtext_encode("rfc822;ü@x")).unwrap(),
            "rfc822;ü@x"
        );
        assert!(xtext_decode("+2").is_err());
        assert!(xtext_decode("a b").is_err());
        assert!(xtext_decode("+FF").is_err());
    }
}
