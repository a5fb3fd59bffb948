//! `format_envelope` over arbitrary text. Input: one flag byte (bit 0: SMTPUTF8, bit 1: a
//! sender), then fields separated by 0xFF: the sender (if any), a recipient, a second
//! recipient, a MAIL keyword and value, an RCPT keyword and value (an empty value: none).
//!
//! Invariants, on success:
//! - every line is one command: it ends with CRLF and holds no other control character,
//!   so nothing a caller gives can add a command or a parameter (checklist B14);
//! - the server's own parser reads each line back as MAIL or RCPT with the canonical
//!   address the formatter returned and exactly the parameters given (keywords
//!   upper-cased); a UTF-8 sender without the SMTPUTF8 parameter (which the connection
//!   adds) is refused with 553 as the server must.
#![no_main]

use ferrosmtp::envelope::Arg;
use ferrosmtp::{format_envelope, parse_command};
use libfuzzer_sys::fuzz_target;

type Param<'a> = (&'a str, Option<&'a str>);

fn to_args<'a>(params: &[Param<'a>]) -> Vec<(Arg<'a>, Option<Arg<'a>>)> {
    params.iter().map(|&(k, v)| (Ok(k), v.map(Ok))).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let smtputf8 = flags & 1 == 1;
    let fields: Vec<String> = rest
        .split(|&b| b == 0xff)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let with_sender = flags & 2 == 2;
    let sender = with_sender.then(|| field(0));
    let recipients: Vec<&str> = [field(1), field(2)]
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect();
    let param = |k: usize| -> Vec<Param<'_>> {
        if field(k).is_empty() {
            return Vec::new();
        }
        let value = field(k + 1);
        vec![(field(k), (!value.is_empty()).then_some(value))]
    };
    let (mail, rcpt) = (param(3), param(5));
    let recipient_args: Vec<Arg<'_>> = recipients.iter().map(|&r| Ok(r)).collect();
    let Ok(lines) = format_envelope(
        sender.map(Ok),
        &recipient_args,
        &to_args(&mail),
        &to_args(&rcpt),
        smtputf8,
    ) else {
        return;
    };
    assert_eq!(lines.len(), usize::from(with_sender) + recipients.len());
    for (index, (address, line)) in lines.iter().enumerate() {
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        let body = &line[..line.len() - 2];
        assert!(!body.iter().any(|&b| b < b' ' || b == 0x7f), "{line:?}");
        let is_mail = with_sender && index == 0;
        let given = if is_mail { &mail } else { &rcpt };
        let declared = given
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("SMTPUTF8"));
        let command = match parse_command(body, true) {
            Ok(command) => command,
            // A UTF-8 sender needs the SMTPUTF8 parameter: the connection adds it and
            // checks it (ClientConnection), the formatter does not.
            Err(e) if is_mail && !body.is_ascii() && !declared => {
                assert_eq!(e.code, 553, "{e}");
                continue;
            }
            Err(e) => panic!("the server cannot read {line:?}: {e}"),
        };
        assert_eq!(command.verb, if is_mail { "MAIL" } else { "RCPT" });
        let path = command.path.expect("MAIL and RCPT carry a path");
        assert_eq!(&path.address(), address, "{line:?}");
        let expected: Vec<(String, Option<String>)> = given
            .iter()
            .map(|&(k, v)| (k.to_ascii_uppercase(), v.map(str::to_string)))
            .collect();
        assert_eq!(command.params, expected, "{line:?}");
    }
});
