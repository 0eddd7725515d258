//! Sans-IO HTTP/1.1 framing for snapshot downloads and the snapshot server.
//!
//! Bytes in, typed values or typed errors out; no sockets. The pieces:
//!
//! - [`Url`]: `http://host[:port]/path` (plain HTTP only) and [`Url::join`] for `Location`.
//! - [`write_request`] / [`parse_request_head`]: the client's request writer and the
//!   server's request parser.
//! - [`parse_response_head`] / [`write_response_head`]: the response status line and headers.
//! - [`BodyDecoder`]: content-length, chunked and read-until-close bodies, push-based and
//!   zero-copy (it returns the range of the input that is body data).
//! - [`ByteRange`], [`parse_range_header`], [`ContentRange`]: `Range` / `Content-Range`.
//!
//! Every parser has limits ([`Limits`]) and never panics on any input.

use std::fmt::Write as _;
use std::ops::Range;

/// Limits on what a peer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest status line + headers (or request line + headers), in bytes.
    pub max_head_bytes: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
    /// Largest size of one chunk of a chunked body, in bytes.
    pub max_chunk_size_bytes: u64,
    /// Largest length of a chunk-size line (with extensions) or a trailer line, in bytes.
    pub max_chunk_line_bytes: usize,
    /// Largest body as a whole, in bytes (content-length, chunked and until-close).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_chunk_size_bytes: 64 * 1024 * 1024,
            max_chunk_line_bytes: 1024,
            max_body_bytes: 1 << 44,
        }
    }
}

/// Everything that can be wrong with HTTP bytes or URLs, naming what and where.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("HTTP head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("HTTP head has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed HTTP head: {0}")]
    BadHead(String),
    #[error("malformed header {name}: {value}")]
    BadHeader { name: &'static str, value: String },
    #[error("both Content-Length and chunked Transfer-Encoding given")]
    AmbiguousLength,
    #[error("unsupported Transfer-Encoding {0:?} (only chunked)")]
    UnsupportedTransferEncoding(String),
    #[error("chunk size line malformed at body offset {offset}")]
    BadChunkLine { offset: u64 },
    #[error("chunk of {size} bytes exceeds the limit of {limit} bytes")]
    ChunkTooLarge { size: u64, limit: u64 },
    #[error("chunk line longer than {limit} bytes")]
    ChunkLineTooLong { limit: usize },
    #[error("missing CRLF after chunk data at body offset {offset}")]
    MissingChunkCrlf { offset: u64 },
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: u64, limit: u64 },
    #[error("malformed URL {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("malformed Range {0:?}")]
    BadRange(String),
    #[error("malformed Content-Range {0:?}")]
    BadContentRange(String),
}

/// An absolute `http://` URL, split into what a client needs to connect and ask.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Url {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

const MAX_URL_BYTES: usize = 4096;

impl Url {
    /// Parse `http://host[:port][/path]`. HTTPS is not supported (mirrors are plain HTTP).
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = |why| HttpError::BadUrl {
            url: s.chars().take(200).collect(),
            why,
        };
        if s.len() > MAX_URL_BYTES {
            return Err(bad("longer than 4096 bytes"));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        if authority.is_empty() {
            return Err(bad("empty host"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed ["))?;
            let host = &v6[..end];
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => 80,
                None => return Err(bad("junk after ]")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f)
            || host.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(bad("control characters or spaces"));
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` as used to connect and in the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolve a `Location` value (absolute URL, absolute path or relative path) against self.
    pub fn join(&self, location: &str) -> Result<Url, HttpError> {
        if location.starts_with("http://") {
            return Url::parse(location);
        }
        if location.contains("://") || location.starts_with("//") {
            return Err(HttpError::BadUrl {
                url: location.chars().take(200).collect(),
                why: "only http:// is supported",
            });
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let dir = match self.path.split('?').next().unwrap_or("/").rfind('/') {
                Some(i) => &self.path[..=i],
                None => "/",
            };
            format!("{dir}{location}")
        };
        Url::parse(&format!("http://{}{}", self.authority(), path))
    }

    /// The last path segment (without query), e.g. the archive file name.
    pub fn file_name(&self) -> &str {
        let p = self.path.split('?').next().unwrap_or("");
        p.rsplit('/').next().unwrap_or("")
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// Request methods this crate writes and parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }
}

/// An inclusive byte range `first..=last` as used by `Range` and `Content-Range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// The range `[start, start + len)`; `None` when `len` is 0 or it overflows.
    pub fn from_start_len(start: u64, len: u64) -> Option<ByteRange> {
        if len == 0 {
            return None;
        }
        Some(ByteRange {
            first: start,
            last: start.checked_add(len - 1)?,
        })
    }
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A request to write with [`write_request`].
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a Url,
    pub range: Option<ByteRange>,
    /// Extra header lines (name, value); names and values must not contain CR/LF.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub keep_alive: bool,
}

/// Append the bytes of `req` to `out`. Header names/values with CR, LF or NUL are dropped.
pub fn write_request(req: &Request<'_>, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method.as_str(),
        req.url.path,
        req.url.authority()
    );
    s.push_str("User-Agent: catchup/0.1\r\nAccept: */*\r\n");
    if let Some(r) = req.range {
        let _ = write!(s, "Range: bytes={}-{}\r\n", r.first, r.last);
    }
    s.push_str(if req.keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    });
    if !req.body.is_empty() || req.method == Method::Post {
        let _ = write!(s, "Content-Length: {}\r\n", req.body.len());
    }
    for (n, v) in req.headers {
        let clean = |x: &str| !x.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if clean(n) && clean(v) && !n.is_empty() {
            let _ = write!(s, "{n}: {v}\r\n");
        }
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(req.body);
}

/// How the body of a message is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD replies, 1xx/204/304, requests without a length).
    Empty,
    Length(u64),
    Chunked,
    /// Read until the peer closes (HTTP/1.0 style responses).
    UntilClose,
}

/// A parsed response status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// Header fields in order; names as sent, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// Whether the connection may be reused after this response.
    pub keep_alive: bool,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
}

impl ResponseHead {
    /// First header named `name` (case-insensitive), as UTF-8 text if it is.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// How the body is delimited, given the method the request used.
    pub fn body_kind(&self, request_method: Method) -> BodyKind {
        if request_method == Method::Head
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return BodyKind::Empty;
        }
        if self.chunked {
            BodyKind::Chunked
        } else if let Some(n) = self.content_length {
            BodyKind::Length(n)
        } else {
            BodyKind::UntilClose
        }
    }

    /// `Content-Range` of a 206 reply.
    pub fn content_range(&self) -> Result<Option<ContentRange>, HttpError> {
        self.header("content-range")
            .map(parse_content_range)
            .transpose()
    }

    /// Whether the server announces byte ranges (`Accept-Ranges: bytes`).
    pub fn accepts_ranges(&self) -> bool {
        self.header("accept-ranges")
            .is_some_and(|v| v.eq_ignore_ascii_case("bytes"))
    }

    /// Whether this is a redirect with a `Location`.
    pub fn redirect_location(&self) -> Option<&str> {
        if matches!(self.status, 301 | 302 | 303 | 307 | 308) {
            self.header("location")
        } else {
            None
        }
    }
}

fn parse_u64_header(name: &'static str, v: &[u8]) -> Result<u64, HttpError> {
    let s = std::str::from_utf8(v).map_err(|_| HttpError::BadHeader {
        name,
        value: String::from_utf8_lossy(v).into(),
    })?;
    let t = s.trim();
    if t.is_empty() || t.len() > 19 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadHeader {
            name,
            value: t.chars().take(64).collect(),
        });
    }
    t.parse().map_err(|_| HttpError::BadHeader {
        name,
        value: t.into(),
    })
}

struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive_token: bool,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    let mut f = Framing {
        content_length: None,
        chunked: false,
        close: false,
        keep_alive_token: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_u64_header("Content-Length", h.value)?;
            if f.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::BadHeader {
                    name: "Content-Length",
                    value: "conflicting values".into(),
                });
            }
            f.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value);
            for enc in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if enc.eq_ignore_ascii_case("chunked") {
                    f.chunked = true;
                } else if !enc.eq_ignore_ascii_case("identity") {
                    return Err(HttpError::UnsupportedTransferEncoding(
                        enc.chars().take(64).collect(),
                    ));
                }
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value);
            for t in v.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    f.close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    f.keep_alive_token = true;
                }
            }
        }
    }
    if f.chunked && f.content_length.is_some() {
        return Err(HttpError::AmbiguousLength);
    }
    Ok(f)
}

fn map_httparse(e: httparse::Error, limits: &Limits) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders {
            limit: limits.max_headers,
        },
        other => HttpError::BadHead(other.to_string()),
    }
}

/// Parse a response head from the start of `buf`. `Ok(None)`: need more bytes;
/// `Ok(Some((head, n)))`: the head took `n` bytes and the body starts at `buf[n..]`.
pub fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut resp = httparse::Response::new(&mut storage);
    let status = resp.parse(buf).map_err(|e| map_httparse(e, limits))?;
    let n = match status {
        httparse::Status::Partial => {
            if buf.len() > limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if n > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let f = framing(resp.headers)?;
    let minor_version = resp.version.unwrap_or(1);
    let head = ResponseHead {
        status: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").chars().take(128).collect(),
        headers: resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        content_length: f.content_length,
        chunked: f.chunked,
        keep_alive: if minor_version == 0 {
            f.keep_alive_token && !f.close
        } else {
            !f.close
        },
        minor_version,
    };
    Ok(Some((head, n)))
}

/// A parsed request line and headers (the server side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// Request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub content_length: Option<u64>,
    pub keep_alive: bool,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }
}

/// Parse a request head; same contract as [`parse_response_head`]. Only GET, HEAD and POST
/// are accepted; chunked request bodies are refused.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut storage);
    let n = match req.parse(buf).map_err(|e| map_httparse(e, limits))? {
        httparse::Status::Partial => {
            if buf.len() > limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if n > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        other => {
            return Err(HttpError::BadHead(format!(
                "unsupported method {:?}",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
    let f = framing(req.headers)?;
    if f.chunked {
        return Err(HttpError::UnsupportedTransferEncoding(
            "chunked request body".into(),
        ));
    }
    let minor = req.version.unwrap_or(1);
    Ok(Some((
        RequestHead {
            method,
            target: req.path.unwrap_or("/").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            content_length: f.content_length,
            keep_alive: if minor == 0 {
                f.keep_alive_token && !f.close
            } else {
                !f.close
            },
        },
        n,
    )))
}

/// Append a response status line and headers (ending with the blank line) to `out`.
/// `Content-Length` is written when `content_length` is given; extra headers with CR/LF are dropped.
pub fn write_response_head(
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    content_length: Option<u64>,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let mut s = String::with_capacity(256);
    let _ = write!(s, "HTTP/1.1 {status} {reason}\r\nServer: catchup\r\n");
    if let Some(n) = content_length {
        let _ = write!(s, "Content-Length: {n}\r\n");
    }
    s.push_str(if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    });
    for (n, v) in headers {
        if !n
            .bytes()
            .chain(v.bytes())
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            let _ = write!(s, "{n}: {v}\r\n");
        }
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}

/// What a `Range` request header asks for, resolved against the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve this part with 206.
    Satisfiable(ByteRange),
    /// Nothing of it lies inside the file: 416.
    Unsatisfiable,
}

/// Parse a single-range `Range: bytes=a-b | a- | -n` against a file of `size_bytes`.
/// Multi-range requests are refused with [`HttpError::BadRange`] (callers then serve 200).
pub fn parse_range_header(value: &str, size_bytes: u64) -> Result<RangeRequest, HttpError> {
    let bad = || HttpError::BadRange(value.chars().take(100).collect());
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?.trim();
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, HttpError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if a.trim().is_empty() {
        let n = num(b)?;
        if n == 0 || size_bytes == 0 {
            return Ok(RangeRequest::Unsatisfiable);
        }
        let n = n.min(size_bytes);
        return Ok(RangeRequest::Satisfiable(ByteRange {
            first: size_bytes - n,
            last: size_bytes - 1,
        }));
    }
    let first = num(a)?;
    let last = if b.trim().is_empty() {
        u64::MAX
    } else {
        num(b)?
    };
    if last < first {
        return Err(bad());
    }
    if first >= size_bytes {
        return Ok(RangeRequest::Unsatisfiable);
    }
    Ok(RangeRequest::Satisfiable(ByteRange {
        first,
        last: last.min(size_bytes - 1),
    }))
}

/// A parsed `Content-Range: bytes a-b/total` (or `bytes */total` on 416).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub range: Option<ByteRange>,
    pub total_bytes: Option<u64>,
}

pub fn parse_content_range(value: &str) -> Result<ContentRange, HttpError> {
    let bad = || HttpError::BadContentRange(value.chars().take(100).collect());
    let rest = value
        .trim()
        .strip_prefix("bytes")
        .ok_or_else(bad)?
        .trim_start();
    let (r, total) = rest.split_once('/').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, HttpError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let total_bytes = if total.trim() == "*" {
        None
    } else {
        Some(num(total)?)
    };
    let range = if r.trim() == "*" {
        None
    } else {
        let (a, b) = r.split_once('-').ok_or_else(bad)?;
        let (first, last) = (num(a)?, num(b)?);
        if last < first || total_bytes.is_some_and(|t| last >= t) {
            return Err(bad());
        }
        Some(ByteRange { first, last })
    };
    if range.is_none() && total_bytes.is_none() {
        return Err(bad());
    }
    Ok(ContentRange { range, total_bytes })
}

/// One step of [`BodyDecoder::decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed by this step.
    pub consumed: usize,
    /// Body bytes inside the input (a sub-range of `input[..consumed]`), possibly empty.
    pub data: Range<usize>,
    /// The body is complete; bytes after `consumed` belong to the next message.
    pub done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size line.
    Size,
    /// Inside chunk data; bytes left.
    Data(u64),
    /// Expecting CRLF after chunk data (how many of the 2 bytes seen).
    DataCrlf(u8),
    /// Reading trailer lines after the last chunk.
    Trailer,
    Done,
}

/// Push-based body decoder. Call [`BodyDecoder::decode`] with the bytes at hand until it
/// reports `done`; with [`BodyKind::UntilClose`] call [`BodyDecoder::finish_on_close`] at EOF.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    kind: BodyKind,
    limits: Limits,
    remaining: u64,
    body_bytes: u64,
    chunk: ChunkState,
    line: Vec<u8>,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind, limits: Limits) -> Result<BodyDecoder, HttpError> {
        let remaining = match kind {
            BodyKind::Length(n) if n > limits.max_body_bytes => {
                return Err(HttpError::BodyTooLarge {
                    size: n,
                    limit: limits.max_body_bytes,
                })
            }
            BodyKind::Length(n) => n,
            _ => 0,
        };
        Ok(BodyDecoder {
            kind,
            limits,
            remaining,
            body_bytes: 0,
            chunk: ChunkState::Size,
            line: Vec::new(),
        })
    }

    /// Body bytes delivered so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    pub fn is_done(&self) -> bool {
        match self.kind {
            BodyKind::Empty => true,
            BodyKind::Length(_) => self.remaining == 0,
            BodyKind::Chunked => self.chunk == ChunkState::Done,
            BodyKind::UntilClose => false,
        }
    }

    /// The peer closed the connection: `Ok` if that ends the body properly.
    pub fn finish_on_close(&self) -> bool {
        self.kind == BodyKind::UntilClose || self.is_done()
    }

    fn count(&mut self, n: u64) -> Result<(), HttpError> {
        self.body_bytes += n;
        if self.body_bytes > self.limits.max_body_bytes {
            return Err(HttpError::BodyTooLarge {
                size: self.body_bytes,
                limit: self.limits.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Decode from `input`. Each call returns at most one contiguous piece of body data.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        match self.kind {
            BodyKind::Empty => Ok(Decoded {
                consumed: 0,
                data: 0..0,
                done: true,
            }),
            BodyKind::Length(_) => {
                let n = (input.len() as u64).min(self.remaining) as usize;
                self.remaining -= n as u64;
                self.body_bytes += n as u64;
                Ok(Decoded {
                    consumed: n,
                    data: 0..n,
                    done: self.remaining == 0,
                })
            }
            BodyKind::UntilClose => {
                self.count(input.len() as u64)?;
                Ok(Decoded {
                    consumed: input.len(),
                    data: 0..input.len(),
                    done: false,
                })
            }
            BodyKind::Chunked => self.decode_chunked(input),
        }
    }

    fn decode_chunked(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let mut pos = 0usize;
        // Bounded: every iteration consumes at least one byte or returns.
        loop {
            match self.chunk {
                ChunkState::Done => {
                    return Ok(Decoded {
                        consumed: pos,
                        data: pos..pos,
                        done: true,
                    })
                }
                ChunkState::Data(left) => {
                    if pos == input.len() {
                        return Ok(Decoded {
                            consumed: pos,
                            data: pos..pos,
                            done: false,
                        });
                    }
                    let n = ((input.len() - pos) as u64).min(left) as usize;
                    self.count(n as u64)?;
                    let left = left - n as u64;
                    self.chunk = if left == 0 {
                        ChunkState::DataCrlf(0)
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded {
                        consumed: pos + n,
                        data: pos..pos + n,
                        done: false,
                    });
                }
                ChunkState::DataCrlf(seen) => {
                    if pos == input.len() {
                        return Ok(Decoded {
                            consumed: pos,
                            data: pos..pos,
                            done: false,
                        });
                    }
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if input[pos] != want {
                        return Err(HttpError::MissingChunkCrlf {
                            offset: self.body_bytes,
                        });
                    }
                    pos += 1;
                    self.chunk = if seen == 0 {
                        ChunkState::DataCrlf(1)
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(nl) = input[pos..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[pos..]);
                        if self.line.len() > self.limits.max_chunk_line_bytes {
                            return Err(HttpError::ChunkLineTooLong {
                                limit: self.limits.max_chunk_line_bytes,
                            });
                        }
                        return Ok(Decoded {
                            consumed: input.len(),
                            data: input.len()..input.len(),
                            done: false,
                        });
                    };
                    self.line.extend_from_slice(&input[pos..pos + nl]);
                    pos += nl + 1;
                    if self.line.len() > self.limits.max_chunk_line_bytes {
                        return Err(HttpError::ChunkLineTooLong {
                            limit: self.limits.max_chunk_line_bytes,
                        });
                    }
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if self.chunk == ChunkState::Trailer {
                        if line.is_empty() {
                            self.chunk = ChunkState::Done;
                        }
                        continue;
                    }
                    let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
                    let size_txt = std::str::from_utf8(size_part)
                        .map_err(|_| HttpError::BadChunkLine {
                            offset: self.body_bytes,
                        })?
                        .trim();
                    if size_txt.is_empty()
                        || size_txt.len() > 16
                        || !size_txt.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(HttpError::BadChunkLine {
                            offset: self.body_bytes,
                        });
                    }
                    let size =
                        u64::from_str_radix(size_txt, 16).map_err(|_| HttpError::BadChunkLine {
                            offset: self.body_bytes,
                        })?;
                    if size > self.limits.max_chunk_size_bytes {
                        return Err(HttpError::ChunkTooLarge {
                            size,
                            limit: self.limits.max_chunk_size_bytes,
                        });
                    }
                    self.chunk = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
            }
        }
    }
}

/// Append one chunk of a chunked body (an empty `data` writes the last chunk).
pub fn write_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        out.extend_from_slice(b"0\r\n\r\n");
        return;
    }
    let _ = write!(DisplayVec(out), "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

struct DisplayVec<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for DisplayVec<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
