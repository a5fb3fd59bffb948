//! PyO3 bindings: `ferrosmtp._core`, the same API as `ferrosmtp._pure`.
//!
//! Input `bytes` are borrowed without copying; every `feed` returns one list per call (one
//! FFI crossing per socket read). The exceptions are the plain-Python classes of
//! `ferrosmtp._errors`, so `except CodecError` catches the same class for both backends.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyInt, PyList, PyMemoryView, PyString, PyTuple, PyType,
};
use pyo3::IntoPyObjectExt;

use crate::address;
use crate::command;
use crate::dotstuff;
use crate::envelope::{self, EnvelopeError, Role};
use crate::error::{self, CodecError as RustCodecError};
use crate::fastpath;
use crate::framing::{self, Item, ReaderConfig};
use crate::params;
use crate::reply;
#[cfg(unix)]
use crate::syncer;

static CODEC_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static REPLY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        let module = py.import("ferrosmtp._errors")?;
        Ok::<_, PyErr>(module.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py))
}

fn codec_err(py: Python<'_>, e: RustCodecError) -> PyErr {
    match error_class(py, &CODEC_ERROR, "CodecError") {
        Ok(cls) => match cls.call1((e.code, e.enhanced, e.text.as_ref())) {
            Ok(instance) => PyErr::from_value(instance),
            Err(err) => err,
        },
        Err(err) => err,
    }
}

fn reply_err(py: Python<'_>, message: &str) -> PyErr {
    match error_class(py, &REPLY_ERROR, "ReplyError") {
        Ok(cls) => match cls.call1((message,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(err) => err,
        },
        Err(err) => err,
    }
}

/// A `str` argument as UTF-8, refusing lone surrogates with the codec's own error (as the
/// pure twin does) rather than PyO3's UnicodeEncodeError.
fn utf8<'a>(py: Python<'_>, s: &'a Bound<'_, PyString>) -> PyResult<std::borrow::Cow<'a, str>> {
    s.to_cow()
        .map_err(|_| codec_err(py, error::BAD_UTF8.into()))
}

/// A bytes argument: `bytes` borrowed without a copy, `bytearray` and `memoryview` copied,
/// anything else a TypeError (the pure twin's `require_bytes` has the same rule).
fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let copy = obj.call_method0("tobytes")?;
        return Ok(Cow::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "argument '{name}': expected a bytes-like object, not {}",
        obj.get_type().name()?
    )))
}

fn repr<'py, T: IntoPyObject<'py>>(py: Python<'py>, value: T) -> PyResult<String> {
    Ok(value.into_bound_py_any(py)?.repr()?.to_string())
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

// -- Path ----------------------------------------------------------------------------------

/// A parsed reverse- or forward-path.
///
/// ``local_part`` is the semantic local part (quotes and escapes removed); ``domain`` is
/// the domain or address literal as sent; ``source_route`` holds the domains of a
/// deprecated source route, which RFC 5321 says to accept and ignore. The null path
/// ``<>`` has an empty local part and domain; ``<Postmaster>`` has an empty domain.
#[pyclass(
    module = "ferrosmtp._core",
    name = "Path",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyPath(address::Path);

#[pymethods]
impl PyPath {
    #[new]
    #[pyo3(signature = (local_part, domain, source_route = Vec::new()),
        text_signature = "(local_part, domain, source_route=())")]
    fn new(local_part: String, domain: String, source_route: Vec<String>) -> Self {
        PyPath(address::Path {
            local_part,
            domain,
            source_route,
        })
    }

    #[getter]
    fn local_part(&self) -> &str {
        &self.0.local_part
    }

    #[getter]
    fn domain(&self) -> &str {
        &self.0.domain
    }

    #[getter]
    fn source_route<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.source_route)
    }

    /// True for the null path ``<>``.
    #[getter]
    fn is_null(&self) -> bool {
        self.0.is_null()
    }

    /// True for ``<Postmaster>`` (in any case, without a domain).
    #[getter]
    fn is_postmaster(&self) -> bool {
        self.0.is_postmaster()
    }

    /// The mailbox as ``local@domain``, quoting the local part only where needed.
    #[getter]
    fn address(&self) -> String {
        self.0.address()
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Path(local_part={}, domain={}, source_route={})",
            repr(py, &self.0.local_part)?,
            repr(py, &self.0.domain)?,
            self.source_route(py)?.repr()?
        ))
    }
}

// -- reader items ----------------------------------------------------------------------

/// One parsed command line.
///
/// ``verb`` is upper-cased; ``arg`` is the text after the verb with surrounding spaces
/// removed. MAIL and RCPT carry their parsed ``path`` and ESMTP ``params``; BDAT carries
/// ``chunk_size`` and ``last``.
#[pyclass(module = "ferrosmtp._core", name = "Command", frozen, eq)]
#[derive(Clone, PartialEq, Eq)]
pub struct PyCommand(command::Command);

fn params_dict<'py>(py: Python<'py>, params: &params::Params) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in params {
        dict.set_item(k, v)?;
    }
    Ok(dict)
}

#[pymethods]
impl PyCommand {
    #[new]
    #[pyo3(signature = (verb, arg, path = None, params = None, chunk_size = None, last = false))]
    fn new(
        verb: String,
        arg: String,
        path: Option<PyPath>,
        params: Option<Vec<(String, Option<String>)>>,
        chunk_size: Option<u64>,
        last: bool,
    ) -> Self {
        PyCommand(command::Command {
            verb,
            arg,
            path: path.map(|p| p.0),
            params: params.unwrap_or_default(),
            chunk_size,
            last,
        })
    }

    #[getter]
    fn verb(&self) -> &str {
        &self.0.verb
    }

    #[getter]
    fn arg(&self) -> &str {
        &self.0.arg
    }

    #[getter]
    fn path(&self) -> Option<PyPath> {
        self.0.path.clone().map(PyPath)
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        params_dict(py, &self.0.params)
    }

    #[getter]
    fn chunk_size(&self) -> Option<u64> {
        self.0.chunk_size
    }

    #[getter]
    fn last(&self) -> bool {
        self.0.last
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = match &self.0.path {
            Some(p) => PyPath(p.clone()).__repr__(py)?,
            None => "None".into(),
        };
        Ok(format!(
            "Command(verb={}, arg={}, path={}, params={}, chunk_size={}, last={})",
            repr(py, &self.0.verb)?,
            repr(py, &self.0.arg)?,
            path,
            params_dict(py, &self.0.params)?.repr()?,
            self.0
                .chunk_size
                .map_or("None".to_string(), |n| n.to_string()),
            py_bool(self.0.last)
        ))
    }
}

/// Input the reader refused, with the reply to send.
///
/// ``fatal`` means the reader has stopped reading: the connection must be closed after
/// the reply is sent.
#[pyclass(
    module = "ferrosmtp._core",
    name = "Violation",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyViolation(framing::Violation);

#[pymethods]
impl PyViolation {
    #[new]
    #[pyo3(signature = (kind, code, enhanced, text, fatal = false))]
    fn new(kind: String, code: u16, enhanced: String, text: String, fatal: bool) -> Self {
        PyViolation(framing::Violation {
            kind: kind.into(),
            code,
            enhanced: enhanced.into(),
            text: text.into(),
            fatal,
        })
    }

    #[getter]
    fn kind(&self) -> &str {
        &self.0.kind
    }

    #[getter]
    fn code(&self) -> u16 {
        self.0.code
    }

    #[getter]
    fn enhanced(&self) -> &str {
        &self.0.enhanced
    }

    #[getter]
    fn text(&self) -> &str {
        &self.0.text
    }

    #[getter]
    fn fatal(&self) -> bool {
        self.0.fatal
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Violation(kind={}, code={}, enhanced={}, text={}, fatal={})",
            repr(py, self.0.kind.as_ref())?,
            self.0.code,
            repr(py, self.0.enhanced.as_ref())?,
            repr(py, self.0.text.as_ref())?,
            py_bool(self.0.fatal)
        ))
    }
}

/// A reader item that carries one bytes object, equal to another of its class when the
/// bytes are: `Data` (message content) and `Line` (a line read in single-line mode).
macro_rules! bytes_item {
    ($rust:ident, $name:literal, $doc:literal) => {
        #[doc = $doc]
        #[pyclass(module = "ferrosmtp._core", name = $name, frozen, freelist = 64)]
        pub struct $rust {
            #[pyo3(get)]
            data: Py<PyBytes>,
        }

        #[pymethods]
        impl $rust {
            #[new]
            fn new(data: Py<PyBytes>) -> Self {
                $rust { data }
            }

            fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> bool {
                match other.cast::<$rust>() {
                    Ok(o) => self.data.as_bytes(py) == o.get().data.as_bytes(py),
                    Err(_) => false,
                }
            }

            fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
                self.data.bind(py).hash()
            }

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                Ok(format!(
                    concat!($name, "(data={})"),
                    self.data.bind(py).repr()?
                ))
            }
        }
    };
}

bytes_item!(
    PyData,
    "Data",
    "A piece of message content: DATA already unstuffed, or BDAT chunk bytes."
);
bytes_item!(
    PyLine,
    "Line",
    "One line read in line mode (an AUTH exchange), without its line end."
);

/// The end of a DATA body (at CRLF.CRLF) or of a BDAT chunk.
///
/// ``last`` is False only for a BDAT chunk without LAST. ``size`` counts the content
/// bytes produced for this body or chunk. ``bare_lf`` / ``bare_cr`` report bare line
/// ends seen under either policy. ``violation`` is the reply to send instead of
/// accepting the content (bare line ends under ``reject``, size or line limits).
#[pyclass(module = "ferrosmtp._core", name = "DataEnd", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyDataEnd(framing::DataEnd);

#[pymethods]
impl PyDataEnd {
    #[new]
    #[pyo3(signature = (last, size, bare_lf = false, bare_cr = false, violation = None))]
    fn new(
        last: bool,
        size: u64,
        bare_lf: bool,
        bare_cr: bool,
        violation: Option<PyViolation>,
    ) -> Self {
        PyDataEnd(framing::DataEnd {
            last,
            size,
            bare_lf,
            bare_cr,
            violation: violation.map(|v| v.0),
        })
    }

    #[getter]
    fn last(&self) -> bool {
        self.0.last
    }

    #[getter]
    fn size(&self) -> u64 {
        self.0.size
    }

    #[getter]
    fn bare_lf(&self) -> bool {
        self.0.bare_lf
    }

    #[getter]
    fn bare_cr(&self) -> bool {
        self.0.bare_cr
    }

    #[getter]
    fn violation(&self) -> Option<PyViolation> {
        self.0.violation.clone().map(PyViolation)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let violation = match &self.0.violation {
            Some(v) => PyViolation(v.clone()).__repr__(py)?,
            None => "None".into(),
        };
        Ok(format!(
            "DataEnd(last={}, size={}, bare_lf={}, bare_cr={}, violation={})",
            py_bool(self.0.last),
            self.0.size,
            py_bool(self.0.bare_lf),
            py_bool(self.0.bare_cr),
            violation
        ))
    }
}

fn items_to_list<'py>(py: Python<'py>, items: Vec<Item>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for item in items {
        match item {
            Item::Command(c) => list.append(PyCommand(c))?,
            Item::Violation(v) => list.append(PyViolation(v))?,
            Item::Data(d) => list.append(PyData {
                data: PyBytes::new(py, &d).unbind(),
            })?,
            Item::DataEnd(e) => list.append(PyDataEnd(e))?,
            Item::Line(l) => list.append(PyLine {
                data: PyBytes::new(py, &l).unbind(),
            })?,
        }
    }
    Ok(list)
}

// -- ServerReader ----------------------------------------------------------------------

/// Streaming reader of what an SMTP client sends, fed whole socket reads.
///
/// ``feed(data)`` returns the items the bytes complete: ``Command`` (several for
/// pipelined input) and ``Violation`` (input refused, with the reply to send); message
/// content as ``Data`` and ``DataEnd``; in line mode a ``Line``. After a command whose
/// reply decides how the next bytes are read (DATA, STARTTLS, AUTH) the reader pauses and
/// keeps the rest buffered until ``expect_data()``, ``expect_line()`` or
/// ``expect_command()``. DATA ends only at CRLF.CRLF; the chunk of a valid BDAT is read
/// as content. Limits in octets: ``max_command_line``, ``max_auth_line``,
/// ``max_text_line`` and ``max_message_size`` (None: unlimited), ``max_buffer`` (input
/// held at most); ``bare_newline`` is ``"reject"`` or ``"normalize"``; ``smtputf8``
/// says whether the server offers SMTPUTF8. A message over both DATA limits is refused
/// for its size, or with ``first_limit_wins`` for the limit it crossed first.
#[pyclass(module = "ferrosmtp._core", name = "ServerReader")]
pub struct PyServerReader(framing::ServerReader);

#[pymethods]
impl PyServerReader {
    #[new]
    #[pyo3(signature = (*, max_command_line = 512, max_auth_line = 12288, max_text_line = None,
        max_message_size = None, bare_newline = "reject", smtputf8 = false, max_buffer = 1048576,
        first_limit_wins = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_command_line: usize,
        max_auth_line: usize,
        max_text_line: Option<usize>,
        max_message_size: Option<u64>,
        bare_newline: &str,
        smtputf8: bool,
        max_buffer: usize,
        first_limit_wins: bool,
    ) -> PyResult<Self> {
        let normalize = match bare_newline {
            "reject" => false,
            "normalize" => true,
            _ => {
                return Err(PyValueError::new_err(
                    "bare_newline must be 'reject' or 'normalize'",
                ))
            }
        };
        let cfg = ReaderConfig {
            max_command_line,
            max_auth_line,
            max_text_line,
            max_message_size,
            normalize,
            first_limit_wins,
            smtputf8,
            max_buffer,
        };
        framing::ServerReader::new(cfg)
            .map(PyServerReader)
            .map_err(PyValueError::new_err)
    }

    /// Read ``data`` (bytes, bytearray or memoryview); the items it completes.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let data = bytes_arg(data, "data")?;
        items_to_list(py, self.0.feed(&data))
    }

    /// Resume reading commands after a pause; the items the buffered bytes complete.
    fn expect_command<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.0.expect_command().map_err(PyRuntimeError::new_err)?;
        items_to_list(py, items)
    }

    /// Resume after DATA's 354: read message content up to CRLF.CRLF; the items the
    /// buffered bytes complete.
    fn expect_data<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.0.expect_data().map_err(PyRuntimeError::new_err)?;
        items_to_list(py, items)
    }

    /// Resume after a 334 AUTH challenge: read one line; the items the buffered bytes
    /// complete.
    fn expect_line<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.0.expect_line().map_err(PyRuntimeError::new_err)?;
        items_to_list(py, items)
    }

    /// Forget all buffered input and state (after a TLS handshake) and read commands.
    fn reset(&mut self) {
        self.0.reset()
    }

    /// ``"command"``, ``"paused"`` (until an ``expect_*`` call), ``"data"``, ``"bdat"``,
    /// ``"line"`` or ``"closed"``.
    #[getter]
    fn mode(&self) -> &'static str {
        self.0.mode().name()
    }

    /// Bytes held but not yet turned into items.
    #[getter]
    fn buffered(&self) -> usize {
        self.0.buffered()
    }

    #[getter]
    fn max_command_line(&self) -> usize {
        self.0.config().max_command_line
    }

    #[getter]
    fn max_auth_line(&self) -> usize {
        self.0.config().max_auth_line
    }

    #[getter]
    fn max_text_line(&self) -> Option<usize> {
        self.0.config().max_text_line
    }

    #[getter]
    fn max_message_size(&self) -> Option<u64> {
        self.0.config().max_message_size
    }

    #[getter]
    fn bare_newline(&self) -> &'static str {
        if self.0.config().normalize {
            "normalize"
        } else {
            "reject"
        }
    }

    #[getter]
    fn smtputf8(&self) -> bool {
        self.0.config().smtputf8
    }

    #[getter]
    fn max_buffer(&self) -> usize {
        self.0.config().max_buffer
    }

    #[getter]
    fn first_limit_wins(&self) -> bool {
        self.0.config().first_limit_wins
    }
}

// -- ServerFastPath --------------------------------------------------------------------

/// The commands of a server session that need nothing from the application, run
/// without it: a sink's whole mail transaction.
///
/// It feeds the session's ``reader`` and takes HELO and EHLO, MAIL and RCPT without
/// parameters, DATA and its message, RSET, NOOP and QUIT, answering each with the bytes
/// given for it (``hello``, ``ehlo``, ``mail``, ``rcpt``, ``data``, ``message``,
/// ``reset``, ``noop``, ``quit``) as the server's state machine would when the
/// application answers nothing, under the same limits (``max_recipients``,
/// ``max_junk_commands``, ``strict_pipelining``). It stops after QUIT, and at the first
/// item it does not take (another command, anything refused, a violation, a limit, the
/// first bytes of a TLS handshake on a connection that is not ``tls``) before changing
/// anything for it: ``receive()`` then returns None and ``take_over()`` hands the session
/// back. ``now`` is the time of each read (``time.monotonic()``): ``last_progress`` is
/// when the client last completed something, message content counting at
/// ``data_min_rate`` octets a second (None: any).
#[pyclass(module = "ferrosmtp._core", name = "ServerFastPath")]
pub struct PyServerFastPath {
    reader: Py<PyServerReader>,
    inner: fastpath::FastPath,
}

#[pymethods]
impl PyServerFastPath {
    #[new]
    #[pyo3(signature = (reader, *, hello, ehlo, mail, rcpt, data, message, reset, noop, quit,
        max_recipients, max_junk_commands, strict_pipelining, tls, data_min_rate, now))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        reader: Py<PyServerReader>,
        hello: &[u8],
        ehlo: &[u8],
        mail: &[u8],
        rcpt: &[u8],
        data: &[u8],
        message: &[u8],
        reset: &[u8],
        noop: &[u8],
        quit: &[u8],
        max_recipients: usize,
        max_junk_commands: u64,
        strict_pipelining: bool,
        tls: bool,
        data_min_rate: Option<f64>,
        now: f64,
    ) -> Self {
        let replies = fastpath::Replies {
            hello: hello.to_vec(),
            ehlo: ehlo.to_vec(),
            mail: mail.to_vec(),
            rcpt: rcpt.to_vec(),
            data: data.to_vec(),
            message: message.to_vec(),
            reset: reset.to_vec(),
            noop: noop.to_vec(),
            quit: quit.to_vec(),
        };
        let limits = fastpath::Limits {
            max_recipients,
            max_junk_commands,
            strict_pipelining,
            tls,
            data_min_rate,
        };
        PyServerFastPath {
            reader,
            inner: fastpath::FastPath::new(replies, limits, now),
        }
    }

    /// A new session's fast path, read at ``now``, as if made with this one's arguments
    /// (its replies and limits, and a new reader with its reader's limits), with none of
    /// its state: one configuration's fast path is made once, then copied per connection.
    fn fresh(&self, py: Python<'_>, now: f64) -> PyResult<Self> {
        let config = self.reader.bind(py).try_borrow()?.0.config().clone();
        let reader = framing::ServerReader::new(config).map_err(PyValueError::new_err)?;
        Ok(PyServerFastPath {
            reader: Py::new(py, PyServerReader(reader))?,
            inner: self.inner.fresh(now),
        })
    }

    /// When the client last completed something (a ``time.monotonic()`` value).
    #[getter]
    fn last_progress(&self) -> f64 {
        self.inner.last_progress()
    }

    /// It answered QUIT: the session is over (its 221 comes with ``take_over()``).
    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed()
    }

    /// The session's reader, which it feeds.
    #[getter]
    fn reader(&self, py: Python<'_>) -> Py<PyServerReader> {
        self.reader.clone_ref(py)
    }

    /// Feed ``data`` (read at ``now``) and answer what it completes, at most ``limit``
    /// items: the replies to write, or None when it stopped (then ``take_over()``).
    fn receive<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        limit: i64,
        now: f64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let data = bytes_arg(data, "data")?;
        let limit = usize::try_from(limit).unwrap_or(0); // none left
        let mut reader = self.reader.bind(py).try_borrow_mut()?;
        let out = self
            .inner
            .receive(&mut reader.0, &data, limit, now)
            .map_err(PyRuntimeError::new_err)?;
        Ok(out.map(|out| PyBytes::new(py, &out)))
    }

    /// The session as it stands, for the state machine to go on from: ``(hello,
    /// hello_name, mail, recipients, in_data, junk, closed, replies, items, unread,
    /// received_any, last_progress, data_started, data_bytes)``; the fast path is done.
    fn take_over<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let state = self.inner.take_over();
        let recipients = PyList::new(py, state.recipients.into_iter().map(PyPath))?;
        let items = items_to_list(py, state.items)?;
        // Fourteen fields: past the tuple sizes PyO3 converts, so one by one.
        let fields = [
            state.hello.into_bound_py_any(py)?,
            state.hello_name.into_bound_py_any(py)?,
            state.mail.map(PyPath).into_bound_py_any(py)?,
            recipients.into_any(),
            state.in_data.into_bound_py_any(py)?,
            state.junk.into_bound_py_any(py)?,
            state.closed.into_bound_py_any(py)?,
            PyBytes::new(py, &state.replies).into_any(),
            items.into_any(),
            PyBytes::new(py, &state.unread).into_any(),
            state.received_any.into_bound_py_any(py)?,
            state.last_progress.into_bound_py_any(py)?,
            state.data_started.into_bound_py_any(py)?,
            state.data_bytes.into_bound_py_any(py)?,
        ];
        PyTuple::new(py, fields)
    }
}

// -- replies ---------------------------------------------------------------------------

/// One complete (possibly multi-line) reply.
///
/// ``lines`` hold the text after ``NNN-`` / ``NNN `` exactly as sent (an enhanced code
/// included); ``enhanced`` is the RFC 3463 code of the first line when it has one whose
/// class matches the reply code.
#[pyclass(module = "ferrosmtp._core", name = "Reply", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyReply(reply::Reply);

#[pymethods]
impl PyReply {
    #[new]
    fn new(code: u16, enhanced: Option<String>, lines: Vec<String>) -> Self {
        PyReply(reply::Reply {
            code,
            enhanced,
            lines,
        })
    }

    #[getter]
    fn code(&self) -> u16 {
        self.0.code
    }

    #[getter]
    fn enhanced(&self) -> Option<&str> {
        self.0.enhanced.as_deref()
    }

    #[getter]
    fn lines<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.lines)
    }

    /// The lines joined with newlines.
    #[getter]
    fn text(&self) -> String {
        self.0.lines.join("\n")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Reply(code={}, enhanced={}, lines={})",
            self.0.code,
            repr(py, self.0.enhanced.as_deref())?,
            self.lines(py)?.repr()?
        ))
    }
}

/// Assembles replies from the bytes a server sends (RFC 5321 §4.2).
///
/// Strict: CRLF line ends only, three-digit codes with the same code on every line of a
/// reply, no NUL or bare CR/LF. Bounded: a line over ``max_line`` octets, a reply of more
/// than ``max_lines`` lines or ``max_reply`` octets raises ReplyError. After an error the
/// reader must be discarded.
#[pyclass(module = "ferrosmtp._core", name = "ReplyReader")]
pub struct PyReplyReader(reply::ReplyReader);

#[pymethods]
impl PyReplyReader {
    #[new]
    #[pyo3(signature = (*, max_line = 2048, max_lines = 256, max_reply = 65536))]
    fn new(max_line: usize, max_lines: usize, max_reply: usize) -> Self {
        PyReplyReader(reply::ReplyReader::new(max_line, max_lines, max_reply))
    }

    /// Read ``data``; the replies it completes. Raises ReplyError for a reply that
    /// breaks the grammar or the bounds.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let data = bytes_arg(data, "data")?;
        let replies = self.0.feed(&data).map_err(|m| reply_err(py, m))?;
        PyList::new(py, replies.into_iter().map(PyReply))
    }

    /// Bytes held but not yet turned into replies.
    #[getter]
    fn buffered(&self) -> usize {
        self.0.buffered()
    }

    /// True while a multi-line reply has started but not ended.
    #[getter]
    fn in_reply(&self) -> bool {
        self.0.in_reply()
    }

    #[getter]
    fn max_line(&self) -> usize {
        self.0.max_line
    }

    #[getter]
    fn max_lines(&self) -> usize {
        self.0.max_lines
    }

    #[getter]
    fn max_reply(&self) -> usize {
        self.0.max_reply
    }
}

/// Format a reply for the wire.
///
/// ``text`` is one line, or a sequence of lines for a multi-line reply. CR, LF and other
/// control characters (except tab) are refused with ValueError, as are codes outside
/// 200-559 and an enhanced code whose class differs from the reply's. Lines longer than
/// 512 octets are wrapped onto continuation lines. ``any_code`` also takes a second digit
/// of 6 to 9 (2x6 to 5x9), outside RFC 5321's grammar, with the same checks otherwise.
#[pyfunction]
#[pyo3(signature = (code, text, enhanced = None, *, any_code = false))]
fn format_reply<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
    text: &Bound<'py, PyAny>,
    enhanced: Option<&Bound<'py, PyAny>>,
    any_code: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    // The same checks, in the same order, as the pure twin.
    let code_value = if code.is_instance_of::<PyInt>() && !code.is_instance_of::<PyBool>() {
        code.extract::<i64>().unwrap_or(0)
    } else {
        0
    };
    reply::check_code(code_value, any_code).map_err(PyValueError::new_err)?;
    let enhanced = match enhanced {
        None => None,
        Some(e) if e.is_none() => None,
        Some(e) => {
            let s = e
                .cast::<PyString>()
                .map_err(|_| PyValueError::new_err("enhanced status code must be a string"))?;
            let e = utf8(py, s).map_err(|_| PyValueError::new_err(reply::BAD_ENHANCED))?;
            reply::check_enhanced(code_value, &e).map_err(PyValueError::new_err)?;
            Some(e.into_owned())
        }
    };
    let items: Vec<Bound<'py, PyAny>> = if text.is_instance_of::<PyString>() {
        vec![text.clone()]
    } else {
        text.try_iter()?.collect::<PyResult<_>>()?
    };
    let mut lines = Vec::with_capacity(items.len());
    for item in &items {
        let s = item
            .cast::<PyString>()
            .map_err(|_| PyValueError::new_err("reply text must be str"))?;
        let line = utf8(py, s)?;
        reply::check_text(&line).map_err(PyValueError::new_err)?;
        lines.push(line);
    }
    let refs: Vec<&str> = lines.iter().map(|l| l.as_ref()).collect();
    let out = reply::format_checked(code_value as u16, &refs, enhanced.as_deref());
    Ok(PyBytes::new(py, &out))
}

/// The parts of an EHLO reply: the server's name, its greeting text, and the
/// extensions it offers (keyword upper-cased -> parameter text, ``""`` if none).
#[pyclass(module = "ferrosmtp._core", name = "EhloReply", frozen, eq)]
#[derive(Clone, PartialEq, Eq)]
pub struct PyEhloReply(reply::EhloReply);

#[pymethods]
impl PyEhloReply {
    #[new]
    #[pyo3(signature = (domain, greeting, extensions = None))]
    fn new(domain: String, greeting: String, extensions: Option<Vec<(String, String)>>) -> Self {
        PyEhloReply(reply::EhloReply {
            domain,
            greeting,
            extensions: extensions.unwrap_or_default(),
        })
    }

    #[getter]
    fn domain(&self) -> &str {
        &self.0.domain
    }

    #[getter]
    fn greeting(&self) -> &str {
        &self.0.greeting
    }

    #[getter]
    fn extensions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in &self.0.extensions {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }

    /// Whether the server offers the extension ``keyword`` (in any case).
    fn has(&self, keyword: &str) -> bool {
        let keyword = keyword.to_uppercase();
        self.0.extensions.iter().any(|(k, _)| *k == keyword)
    }

    /// The parameter text of ``keyword`` (``""`` without one), or None if not offered.
    fn param(&self, keyword: &str) -> Option<String> {
        let keyword = keyword.to_uppercase();
        self.0
            .extensions
            .iter()
            .find(|(k, _)| *k == keyword)
            .map(|(_, v)| v.clone())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "EhloReply(domain={}, greeting={}, extensions={})",
            repr(py, &self.0.domain)?,
            repr(py, &self.0.greeting)?,
            self.extensions(py)?.repr()?
        ))
    }
}

/// Read the capabilities from the lines of a 250 EHLO reply.
///
/// The first line is ``domain [greeting]``; each other line is ``KEYWORD [params]``.
/// Lines that are not a valid keyword are skipped; the first of duplicates wins.
#[pyfunction]
fn parse_ehlo(py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<PyEhloReply> {
    let mut owned = Vec::new();
    for item in lines.try_iter()? {
        let item = item?;
        let s = item.cast::<PyString>()?;
        owned.push(utf8(py, s)?.into_owned());
    }
    Ok(PyEhloReply(reply::parse_ehlo(&owned)))
}

// -- dot-stuffing ----------------------------------------------------------------------

/// Streaming encoder for a message body (RFC 5321 §4.5.2).
///
/// Bare CR and bare LF become CRLF, a final CRLF is ensured, and with ``dots=True`` (the
/// DATA form) lines starting with ``.`` get a second one and ``.\r\n`` ends the output.
/// ``dots=False`` gives the BDAT form: only the line ends are normalized.
#[pyclass(module = "ferrosmtp._core", name = "DotStuffer")]
pub struct PyDotStuffer(dotstuff::DotStuffer);

#[pymethods]
impl PyDotStuffer {
    #[new]
    #[pyo3(signature = (*, dots = true))]
    fn new(dots: bool) -> Self {
        PyDotStuffer(dotstuff::DotStuffer::new(dots))
    }

    /// Encode the next piece of the body; the bytes to send (a CR that ends ``data``
    /// is held until the next byte shows whether it starts a CRLF).
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = bytes_arg(data, "data")?;
        let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 4);
        self.0
            .feed(&data, &mut out)
            .map_err(PyRuntimeError::new_err)?;
        Ok(PyBytes::new(py, &out))
    }

    /// End the body: the last bytes to send (a final CRLF if needed, and ``.\r\n``
    /// with ``dots=True``). Nothing may be fed after it.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.0.finish(&mut out).map_err(PyRuntimeError::new_err)?;
        Ok(PyBytes::new(py, &out))
    }
}

/// The DATA wire form of ``body``, ending with ``.\r\n``; with ``dots=False`` the
/// BDAT form (line ends normalized, a final CRLF ensured), whose length is the message
/// size RFC 1870 asks for. One call, as ``DotStuffer`` fed the whole body and finished.
#[pyfunction]
#[pyo3(signature = (body, *, dots = true))]
fn dot_stuff<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyAny>,
    dots: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let body = bytes_arg(body, "body")?;
    Ok(PyBytes::new(py, &dotstuff::wire_form(&body, dots)))
}

// -- the client's envelope -------------------------------------------------------------

/// Python's `repr` of a str, for error messages that quote the caller's text.
fn quote(py: Python<'_>, text: &str) -> String {
    PyString::new(py, text)
        .repr()
        .map_or_else(|_| format!("'{text}'"), |r| r.to_string())
}

fn envelope_err(py: Python<'_>, error: &EnvelopeError) -> PyErr {
    PyValueError::new_err(error.message(&|text| quote(py, text)))
}

fn any_repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map_or_else(|_| "?".to_string(), |r| r.to_string())
}

/// An address argument as text, or refused as the pure twin refuses what is not a str or
/// not valid UTF-8 (a lone surrogate): a type error, a non-ASCII address without SMTPUTF8,
/// an address its parser cannot read.
fn address_arg<'a>(obj: &'a Bound<'_, PyAny>, role: Role, smtputf8: bool) -> EnvelopeArg<'a> {
    let s = match obj.cast::<PyString>() {
        Ok(s) => s,
        Err(_) => {
            let type_name = obj
                .get_type()
                .name()
                .map_or_else(|_| "?".to_string(), |n| n.to_string());
            return Err(EnvelopeError::Given(format!(
                "the {} address must be a str, not {type_name}",
                role.name()
            )));
        }
    };
    s.to_cow().map_err(|_| {
        let lossy = s.to_string_lossy();
        if lossy.chars().any(|c| c < ' ' || c == '\x7f') {
            EnvelopeError::Control(role)
        } else if !smtputf8 {
            EnvelopeError::NotAscii(role)
        } else {
            EnvelopeError::Given(format!(
                "invalid {} address {}: {}",
                role.name(),
                any_repr(obj),
                error::BAD_UTF8.text
            ))
        }
    })
}

type EnvelopeArg<'a> = Result<Cow<'a, str>, EnvelopeError>;

fn as_arg<'a>(arg: &'a EnvelopeArg<'_>) -> envelope::Arg<'a> {
    match arg {
        Ok(text) => Ok(text.as_ref()),
        Err(e) => Err(e.clone()),
    }
}

/// ESMTP parameters from a mapping: each keyword and value as text, or refused as the
/// pure twin refuses what is not a str (or not UTF-8): such a keyword is never a keyword,
/// nor such a value a value.
fn param_args<'py>(
    params: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let params = match params {
        Some(p) if !p.is_none() => p,
        _ => return Ok(Vec::new()),
    };
    if let Ok(dict) = params.cast::<PyDict>() {
        return Ok(dict.iter().collect());
    }
    let mut out = Vec::new();
    for item in params.call_method0("items")?.try_iter()? {
        out.push(item?.extract()?);
    }
    Ok(out)
}

type ParamArg<'a> = (EnvelopeArg<'a>, Option<EnvelopeArg<'a>>);

fn param_texts<'a>(items: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)]) -> Vec<ParamArg<'a>> {
    let text = |obj: &'a Bound<'_, PyAny>| obj.cast::<PyString>().ok()?.to_cow().ok();
    items
        .iter()
        .map(|(key, value)| {
            let key_arg = text(key).ok_or_else(|| {
                EnvelopeError::Given(format!(
                    "invalid ESMTP parameter keyword: {}",
                    any_repr(key)
                ))
            });
            let value_arg = if value.is_none() {
                None
            } else {
                Some(text(value).ok_or_else(|| {
                    let key_text = key_arg.as_deref().unwrap_or("?");
                    EnvelopeError::Given(format!(
                        "invalid value for ESMTP parameter {key_text}: {}",
                        any_repr(value)
                    ))
                }))
            };
            (key_arg, value_arg)
        })
        .collect()
}

fn param_refs<'a>(params: &'a [ParamArg<'_>]) -> Vec<envelope::Param<'a>> {
    params
        .iter()
        .map(|(k, v)| (as_arg(k), v.as_ref().map(as_arg)))
        .collect()
}

/// The MAIL FROM line of ``sender`` (None: no MAIL line) and one RCPT TO line per
/// recipient, each as ``(canonical address, line)``, in that order.
///
/// Addresses (``a@b`` or ``<a@b>``; ``""`` or ``<>`` for a null sender) are parsed with
/// the server's parser and re-serialized; non-ASCII needs ``smtputf8``. ``mail_params``
/// go on the MAIL line, ``rcpt_params`` on every RCPT line (keywords as given, checked
/// against the RFC 5321 grammar). Everything is checked before anything is returned:
/// a refusal raises ValueError saying what is wrong.
#[pyfunction]
#[pyo3(signature = (sender, recipients = None, mail_params = None, rcpt_params = None, *,
    smtputf8 = false))]
fn format_envelope<'py>(
    py: Python<'py>,
    sender: &Bound<'py, PyAny>,
    recipients: Option<&Bound<'py, PyAny>>,
    mail_params: Option<&Bound<'py, PyAny>>,
    rcpt_params: Option<&Bound<'py, PyAny>>,
    smtputf8: bool,
) -> PyResult<Bound<'py, PyList>> {
    let mut recipient_objects = Vec::new();
    if let Some(recipients) = recipients.filter(|r| !r.is_none()) {
        if recipients.is_instance_of::<PyString>() {
            return Err(PyValueError::new_err(
                "recipients must be a sequence of addresses, not one str",
            ));
        }
        for recipient in recipients.try_iter()? {
            recipient_objects.push(recipient?);
        }
    }
    let sender_arg = (!sender.is_none()).then(|| address_arg(sender, Role::Sender, smtputf8));
    let recipient_args: Vec<EnvelopeArg<'_>> = recipient_objects
        .iter()
        .map(|r| address_arg(r, Role::Recipient, smtputf8))
        .collect();
    let recipient_refs: Vec<envelope::Arg<'_>> = recipient_args.iter().map(as_arg).collect();
    let mail_items = param_args(mail_params)?;
    let rcpt_items = param_args(rcpt_params)?;
    let mail = param_texts(&mail_items);
    let rcpt = param_texts(&rcpt_items);
    let lines = envelope::format_envelope(
        sender_arg.as_ref().map(as_arg),
        &recipient_refs,
        &param_refs(&mail),
        &param_refs(&rcpt),
        smtputf8,
    )
    .map_err(|e| envelope_err(py, &e))?;
    let list = PyList::empty(py);
    for (address, line) in lines {
        list.append((address, PyBytes::new(py, &line)))?;
    }
    Ok(list)
}

// -- parsers ---------------------------------------------------------------------------

/// Parse one command line (a trailing CRLF is allowed and ignored).
///
/// ``smtputf8`` says whether the server offers SMTPUTF8: only then may MAIL, RCPT, VRFY
/// and EXPN carry UTF-8, and a MAIL path only with the ``SMTPUTF8`` parameter.
/// Raises CodecError carrying the reply to send.
#[pyfunction]
#[pyo3(signature = (line, *, smtputf8 = false))]
fn parse_command(py: Python<'_>, line: &Bound<'_, PyAny>, smtputf8: bool) -> PyResult<PyCommand> {
    let line = bytes_arg(line, "line")?;
    command::parse_command(&line, smtputf8)
        .map(PyCommand)
        .map_err(|e| codec_err(py, e))
}

/// Parse an RFC 5321 path: ``<local@domain>``, ``<>``, ``<Postmaster>``, a source-routed
/// ``<@a,@b:local@domain>``, or a bare ``local@domain``. Raises CodecError.
#[pyfunction]
#[pyo3(signature = (text, *, smtputf8 = false))]
fn parse_path(py: Python<'_>, text: &Bound<'_, PyString>, smtputf8: bool) -> PyResult<PyPath> {
    address::parse_path(&utf8(py, text)?, smtputf8)
        .map(PyPath)
        .map_err(|e| codec_err(py, e))
}

/// Parse ``KEY[=value]`` words separated by spaces.
///
/// Keywords are upper-cased, values kept as sent; a keyword given twice is refused.
/// Raises CodecError (501 5.5.4).
#[pyfunction]
#[pyo3(signature = (text, *, smtputf8 = false))]
fn parse_params<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyString>,
    smtputf8: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let params = params::parse_params(&utf8(py, text)?, smtputf8).map_err(|e| codec_err(py, e))?;
    params_dict(py, &params)
}

/// Decode RFC 3461 xtext (``+XX`` hex escapes) to the UTF-8 string it encodes.
#[pyfunction]
fn xtext_decode(py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<String> {
    params::xtext_decode(&utf8(py, text)?).map_err(|e| codec_err(py, e))
}

/// Encode a string as RFC 3461 xtext: octets outside ``!``..``~``, ``+`` and ``=``
/// become ``+XX``.
#[pyfunction]
fn xtext_encode(py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<String> {
    Ok(params::xtext_encode(&utf8(py, text)?))
}

/// The spool's file work in a thread of its own (``ferrosmtp.relay.sqlite``): the WAL's
/// ``fdatasync`` (and the folder's ``fsync``), body files written and fsynced, body files
/// unlinked once the WAL is synced; batched, each call a ticket.
#[cfg(unix)]
#[pyclass(module = "ferrosmtp._core", name = "Syncer", frozen)]
struct PySyncer {
    inner: syncer::Syncer,
}

#[cfg(unix)]
fn closed() -> PyErr {
    pyo3::exceptions::PyOSError::new_err("the syncer is closed")
}

#[cfg(unix)]
#[pymethods]
impl PySyncer {
    #[new]
    fn new(file: std::path::PathBuf, folder: std::path::PathBuf) -> PyResult<Self> {
        Ok(PySyncer {
            inner: syncer::Syncer::open(file, folder)?,
        })
    }

    /// Readable when tickets have finished since the last ``completed()``.
    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.inner.readable().as_raw_fd()
    }

    /// Ask for a sync of everything written to the file so far (and of the folder);
    /// returns its ticket.
    fn request(&self, folder: bool) -> PyResult<u64> {
        self.inner.request(folder).ok_or_else(closed)
    }

    /// Ask for ``data`` written to ``path`` (a new file; with ``append``, at the end of
    /// an existing one) and the file fsynced; returns its ticket.
    #[pyo3(signature = (path, data, append=false))]
    fn store(&self, path: std::path::PathBuf, data: &[u8], append: bool) -> PyResult<u64> {
        self.inner
            .store(path, data.to_vec(), append)
            .ok_or_else(closed)
    }

    /// Ask for ``path`` unlinked once the file is synced after this call; returns its
    /// ticket.
    fn remove(&self, path: std::path::PathBuf) -> PyResult<u64> {
        self.inner.remove(path).ok_or_else(closed)
    }

    /// ``(done, failed)``: tickets up to ``done`` are finished; ``failed`` lists those
    /// that failed since the last call, each with its ``OSError``.
    fn completed<'py>(&self, py: Python<'py>) -> (u64, Vec<(u64, Bound<'py, PyAny>)>) {
        let c = self.inner.completed();
        let failed = c
            .failed
            .into_iter()
            .map(|(ticket, code, text)| {
                let error = pyo3::exceptions::PyOSError::new_err((code, text));
                (ticket, error.into_value(py).into_bound(py).into_any())
            })
            .collect();
        (c.done, failed)
    }

    /// Finish the tickets asked for, then stop the thread. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CodecError", error_class(py, &CODEC_ERROR, "CodecError")?)?;
    m.add("ReplyError", error_class(py, &REPLY_ERROR, "ReplyError")?)?;
    m.add_class::<PyPath>()?;
    m.add_class::<PyCommand>()?;
    m.add_class::<PyViolation>()?;
    m.add_class::<PyData>()?;
    m.add_class::<PyDataEnd>()?;
    m.add_class::<PyLine>()?;
    m.add_class::<PyServerReader>()?;
    m.add_class::<PyServerFastPath>()?;
    m.add_class::<PyReply>()?;
    m.add_class::<PyReplyReader>()?;
    m.add_class::<PyEhloReply>()?;
    m.add_class::<PyDotStuffer>()?;
    #[cfg(unix)] // the relay, the syncer's one user, needs POSIX (src/lib.rs)
    m.add_class::<PySyncer>()?;
    m.add_function(wrap_pyfunction!(parse_command, m)?)?;
    m.add_function(wrap_pyfunction!(parse_path, m)?)?;
    m.add_function(wrap_pyfunction!(parse_params, m)?)?;
    m.add_function(wrap_pyfunction!(xtext_decode, m)?)?;
    m.add_function(wrap_pyfunction!(xtext_encode, m)?)?;
    m.add_function(wrap_pyfunction!(format_reply, m)?)?;
    m.add_function(wrap_pyfunction!(parse_ehlo, m)?)?;
    m.add_function(wrap_pyfunction!(dot_stuff, m)?)?;
    m.add_function(wrap_pyfunction!(format_envelope, m)?)?;
    Ok(())
}
