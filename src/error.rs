//! Every reply the codec itself decides, in one table (mirrored by
//! `python/ferrosmtp/_pure/error.py`; differential tests compare the texts byte for byte).

use std::borrow::Cow;
use std::fmt;

/// A reply the codec hands back with a refusal: basic code, enhanced code, text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canned {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: &'static str,
}

const fn canned(code: u16, enhanced: &'static str, text: &'static str) -> Canned {
    Canned {
        code,
        enhanced,
        text,
    }
}

// Command framing and tokenizing.
pub const EMPTY_COMMAND: Canned = canned(500, "5.5.2", "Syntax error: empty command");
pub const BAD_CHARACTER: Canned =
    canned(500, "5.5.2", "Syntax error: invalid character in command");
pub const BAD_VERB: Canned = canned(500, "5.5.2", "Syntax error: command unrecognized");
pub const EIGHT_BIT: Canned = canned(500, "5.5.2", "Syntax error: 8-bit characters not allowed");
pub const BAD_UTF8: Canned = canned(501, "5.5.2", "Syntax error: invalid UTF-8");
pub const LINE_TOO_LONG: Canned = canned(500, "5.5.2", "Line too long");
/// AUTH with more than a mechanism and an initial response: the usage, and why (aiosmtpd
/// answers it differently from a missing mechanism).
pub const AUTH_TOO_MANY: Canned = canned(
    501,
    "5.5.4",
    "Syntax: AUTH mechanism [initial-response] (too many arguments)",
);
pub const AUTH_LINE_TOO_LONG: Canned =
    canned(500, "5.5.6", "Authentication exchange line is too long");
pub const NEED_UTF8: Canned = canned(
    553,
    "5.6.7",
    "Must declare SMTPUTF8 to send unicode address",
);
pub const BAD_PARAMS: Canned = canned(501, "5.5.4", "Syntax error in parameters");
pub const DUPLICATE_PARAM: Canned = canned(501, "5.5.4", "Syntax error: duplicate parameter");
pub const BAD_XTEXT: Canned = canned(501, "5.5.4", "Syntax error: invalid xtext");
pub const BAD_DOMAIN: Canned = canned(501, "5.5.2", "Syntax error: invalid domain name");

// BDAT without a readable size cannot be skipped: the connection must close (RFC 3030,
// Postfix `bdat_cmd`).
pub const BDAT_SYNTAX: Canned = canned(521, "5.5.4", "Syntax: BDAT count [LAST]");
pub const BUFFER_FULL: Canned = canned(554, "5.5.0", "Too much pipelined input");

// End of DATA (or of a BDAT chunk).
pub const MESSAGE_TOO_BIG: Canned = canned(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
pub const BARE_LF: Canned = canned(550, "5.5.2", "Error: bare <LF> received");
pub const BARE_CR: Canned = canned(550, "5.5.2", "Error: bare <CR> received");
pub const TEXT_LINE_TOO_LONG: Canned =
    canned(500, "5.5.2", "Line too long (see RFC 5321 4.5.3.1.6)");

// Path errors: the prefix depends on where the path was found, the reason on what is wrong.
pub const SENDER_PREFIX: Canned = canned(501, "5.1.7", "Bad sender address syntax");
pub const RECIPIENT_PREFIX: Canned = canned(501, "5.1.3", "Bad recipient address syntax");
pub const ADDRESS_PREFIX: Canned = canned(501, "5.1.3", "Bad address syntax");

/// The usage text of a verb, for its 501 reply.
pub fn usage_text(verb: &str) -> &'static str {
    match verb {
        "HELO" => "Syntax: HELO hostname",
        "EHLO" => "Syntax: EHLO hostname",
        "LHLO" => "Syntax: LHLO hostname",
        "MAIL" => "Syntax: MAIL FROM:<address> [parameters]",
        "RCPT" => "Syntax: RCPT TO:<address> [parameters]",
        "DATA" => "Syntax: DATA",
        "RSET" => "Syntax: RSET",
        "QUIT" => "Syntax: QUIT",
        "STARTTLS" => "Syntax: STARTTLS",
        "VRFY" => "Syntax: VRFY address",
        "EXPN" => "Syntax: EXPN mailing-list",
        "AUTH" => "Syntax: AUTH mechanism [initial-response]",
        "BDAT" => "Syntax: BDAT count [LAST]",
        _ => "Syntax error",
    }
}

/// Input the codec refuses, with the reply a server should send (Python: `CodecError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: Cow<'static, str>,
}

impl CodecError {
    pub fn usage(verb: &str) -> Self {
        CodecError {
            code: 501,
            enhanced: "5.5.4",
            text: Cow::Borrowed(usage_text(verb)),
        }
    }

    /// `prefix: reason`, e.g. "Bad sender address syntax: local part too long".
    pub fn with_reason(prefix: Canned, reason: &str) -> Self {
        CodecError {
            code: prefix.code,
            enhanced: prefix.enhanced,
            text: Cow::Owned(format!("{}: {}", prefix.text, reason)),
        }
    }
}

impl From<Canned> for CodecError {
    fn from(c: Canned) -> Self {
        CodecError {
            code: c.code,
            enhanced: c.enhanced,
            text: Cow::Borrowed(c.text),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

impl std::error::Error for CodecError {}
