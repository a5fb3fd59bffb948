//! `parse_path` over arbitrary UTF-8. Input: one flag byte (bit 0: SMTPUTF8), then text.
//!
//! Invariants, when the path parses:
//! - round trip: the path's wire form (`Display`) parses back to an equal `Path`, and is
//!   itself a fixed point (formatting is canonical);
//! - limits (RFC 5321 §4.5.3.1): the local part in its wire (quoted) form is at most 64
//!   octets, the domain at most 255 with labels of at most 63, the path at most 256
//!   octets with its angle brackets;
//! - without SMTPUTF8 the path is ASCII; the null path has no route.
//!
//! When it fails: the reply is a 5xx (553 only for the SMTPUTF8 refusal).
#![no_main]

use ferrosmtp::parse_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let smtputf8 = flags & 1 == 1;
    let path = match parse_path(text, smtputf8) {
        Ok(path) => path,
        Err(e) => {
            assert!((500..=599).contains(&e.code), "{e}");
            return;
        }
    };
    let wire = path.to_string();
    let again = parse_path(&wire, smtputf8)
        .unwrap_or_else(|e| panic!("{text:?} parsed, its wire form {wire:?} did not: {e}"));
    assert_eq!(again, path, "{text:?} -> {wire:?}");
    assert_eq!(again.to_string(), wire, "formatting is not canonical");

    assert!(wire.len() <= 256, "path of {} octets: {wire:?}", wire.len());
    if !smtputf8 {
        assert!(wire.is_ascii());
    }
    if path.is_null() {
        assert!(path.source_route.is_empty());
        assert_eq!(wire, "<>");
        return;
    }
    if path.domain.is_empty() {
        assert!(
            path.is_postmaster(),
            "{wire:?}: only Postmaster has no domain"
        );
        return;
    }
    let address = path.address();
    let at = address
        .rfind('@')
        .expect("an address with a domain has an @");
    assert!(at <= 64, "local part of {at} octets: {wire:?}");
    assert_eq!(&address[at + 1..], path.domain);
    assert!(path.domain.len() <= 255);
    if !path.domain.starts_with('[') {
        assert!(path
            .domain
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63));
    }
    for hop in &path.source_route {
        assert!(!hop.is_empty() && hop.len() <= 255);
    }
});
