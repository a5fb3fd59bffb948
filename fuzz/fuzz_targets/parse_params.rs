//! `parse_params` and the xtext helpers over arbitrary UTF-8. Input: one flag byte
//! (bit 0: SMTPUTF8), then text.
//!
//! Invariants:
//! - on success the keywords are valid esmtp-keywords, upper-cased and unique, values are
//!   non-empty esmtp-values (no '=', space or control), and the canonical form
//!   (`K=V K2 ...`, one space apart) parses to the same list;
//! - errors carry a 501;
//! - `xtext_decode(xtext_encode(s)) == s` for every string, and the encoding is a valid
//!   esmtp-value (so it always fits in `ORCPT=`/`ENVID=`);
//! - when `xtext_decode(text)` succeeds, re-encoding and decoding is stable.
#![no_main]

use ferrosmtp::{parse_params, xtext_decode, xtext_encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let smtputf8 = flags & 1 == 1;

    match parse_params(text, smtputf8) {
        Ok(params) => {
            let mut canonical = Vec::new();
            for (i, (k, v)) in params.iter().enumerate() {
                let kb = k.as_bytes();
                assert!(!kb.is_empty() && kb[0].is_ascii_alphanumeric());
                assert!(kb
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-'));
                assert!(
                    params[..i].iter().all(|(other, _)| other != k),
                    "duplicate {k}"
                );
                if let Some(v) = v {
                    assert!(!v.is_empty());
                    assert!(!v.chars().any(|c| c == '=' || c <= ' ' || c == '\x7f'));
                    canonical.push(format!("{k}={v}"));
                } else {
                    canonical.push(k.clone());
                }
            }
            let canonical = canonical.join(" ");
            assert_eq!(
                parse_params(&canonical, smtputf8).as_ref(),
                Ok(&params),
                "{canonical:?}"
            );
        }
        Err(e) => assert_eq!(e.code, 501, "{e}"),
    }

    let encoded = xtext_encode(text);
    assert_eq!(
        xtext_decode(&encoded).as_deref(),
        Ok(text),
        "xtext round trip"
    );
    assert!(encoded
        .bytes()
        .all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
    if !encoded.is_empty() {
        let param = format!("ORCPT={encoded}");
        assert!(parse_params(&param, false).is_ok(), "{param:?}");
    }
    if let Ok(decoded) = xtext_decode(text) {
        assert_eq!(
            xtext_decode(&xtext_encode(&decoded)).as_deref(),
            Ok(decoded.as_str())
        );
    }
});
