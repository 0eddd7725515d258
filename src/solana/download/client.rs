//! A small HTTP/1.1 client on glommio: HEAD and ranged GET over `glommio::net::TcpStream`,
//! redirects, keep-alive and timeouts. Framing comes from `catchup_http`.

use std::time::{Duration, Instant};

use catchup_http::{
    parse_response_head, write_request, BodyDecoder, BodyKind, ByteRange, HttpError, Limits,
    Method, Request, ResponseHead, Url,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Client timeouts and limits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout_ms: u64,
    /// Longest wait for any read or write to make progress.
    pub io_timeout_ms: u64,
    pub max_redirects: u32,
    pub limits: Limits,
    pub read_buffer_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 3_000,
            io_timeout_ms: 10_000,
            max_redirects: 5,
            limits: Limits::default(),
            read_buffer_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{what} {addr}: {source}")]
    Io {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Http { addr: String, source: HttpError },
    #[error("{addr}: connection closed before the {what} was complete")]
    Closed { addr: String, what: &'static str },
    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects { url: String, limit: u32 },
    #[error("{url}: {why}")]
    Unexpected { url: String, why: String },
    #[error("aborted: {0}")]
    Aborted(String),
}

/// One keep-alive connection to `host:port`.
pub struct Conn {
    stream: TcpStream,
    addr: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    cfg: ClientConfig,
    reusable: bool,
}

impl Conn {
    pub async fn connect(url: &Url, cfg: &ClientConfig) -> Result<Conn, ClientError> {
        let addr = url.authority();
        let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                source: e,
            })?
            .next()
            .ok_or_else(|| ClientError::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let stream =
            TcpStream::connect_timeout(sock, Duration::from_millis(cfg.connect_timeout_ms))
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.clone(),
                    source: e.into(),
                })?;
        let io = Some(Duration::from_millis(cfg.io_timeout_ms.max(1)));
        let _ = stream.set_read_timeout(io);
        let _ = stream.set_write_timeout(io);
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            addr,
            buf: vec![0; cfg.read_buffer_bytes.max(4096)],
            start: 0,
            end: 0,
            cfg: cfg.clone(),
            reusable: true,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the last response allows another request on this connection.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    async fn fill(&mut self) -> Result<usize, ClientError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(ClientError::Http {
                    addr: self.addr.clone(),
                    source: HttpError::HeadTooLarge {
                        limit: self.buf.len(),
                    },
                });
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| ClientError::Io {
                what: "read from",
                addr: self.addr.clone(),
                source: e,
            })?;
        self.end += n;
        Ok(n)
    }

    /// Send a request and read the response head.
    pub async fn send(&mut self, req: &Request<'_>) -> Result<ResponseHead, ClientError> {
        let mut out = Vec::with_capacity(256 + req.body.len());
        write_request(req, &mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| ClientError::Io {
                what: "write to",
                addr: self.addr.clone(),
                source: e,
            })?;
        self.stream.flush().await.map_err(|e| ClientError::Io {
            what: "write to",
            addr: self.addr.clone(),
            source: e,
        })?;
        // Bounded: each round reads more bytes or fails; the head size is limited.
        loop {
            match parse_response_head(&self.buf[self.start..self.end], &self.cfg.limits) {
                Ok(Some((head, n))) => {
                    self.start += n;
                    self.reusable = head.keep_alive && req.keep_alive;
                    if (100..200).contains(&head.status) {
                        continue;
                    }
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Http {
                        addr: self.addr.clone(),
                        source: e,
                    })
                }
            }
            if self.fill().await? == 0 {
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                    what: "response head",
                });
            }
        }
    }

    /// Read the body, handing each piece to `on_data` (which may abort with an error).
    /// Returns the body length.
    pub async fn read_body<F>(&mut self, kind: BodyKind, mut on_data: F) -> Result<u64, ClientError>
    where
        F: FnMut(&[u8]) -> Result<(), ClientError>,
    {
        let mut dec = BodyDecoder::new(kind, self.cfg.limits).map_err(|e| ClientError::Http {
            addr: self.addr.clone(),
            source: e,
        })?;
        if kind == BodyKind::UntilClose {
            self.reusable = false;
        }
        loop {
            while self.start < self.end && !dec.is_done() {
                let d =
                    dec.decode(&self.buf[self.start..self.end])
                        .map_err(|e| ClientError::Http {
                            addr: self.addr.clone(),
                            source: e,
                        })?;
                if !d.data.is_empty() {
                    let (a, b) = (self.start + d.data.start, self.start + d.data.end);
                    on_data(&self.buf[a..b])?;
                }
                self.start += d.consumed;
                if d.consumed == 0 {
                    break;
                }
            }
            if dec.is_done() {
                return Ok(dec.body_bytes());
            }
            let n = self.fill().await?;
            if n == 0 {
                if kind == BodyKind::UntilClose {
                    return Ok(dec.body_bytes());
                }
                self.reusable = false;
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                    what: "body",
                });
            }
        }
    }

    /// Copy up to `out.len()` more body bytes into `out`; 0 means the body is complete.
    /// A connection closed before the end is an error (except for read-until-close bodies).
    pub async fn read_body_into(
        &mut self,
        dec: &mut BodyDecoder,
        out: &mut [u8],
    ) -> Result<usize, ClientError> {
        if out.is_empty() {
            return Ok(0);
        }
        // Bounded: each round consumes input or reads from the socket (or fails).
        loop {
            while self.start < self.end && !dec.is_done() {
                // Never decode more input than `out` can take: the data of one step is a
                // sub-range of its input, so it always fits.
                let lim = (self.end - self.start).min(out.len());
                let avail = &self.buf[self.start..self.start + lim];
                let d = dec.decode(avail).map_err(|e| ClientError::Http {
                    addr: self.addr.clone(),
                    source: e,
                })?;
                self.start += d.consumed;
                if !d.data.is_empty() {
                    let n = d.data.len();
                    out[..n].copy_from_slice(&avail[d.data.clone()]);
                    return Ok(n);
                }
                if d.consumed == 0 {
                    break;
                }
            }
            if dec.is_done() {
                return Ok(0);
            }
            let n = self.fill().await?;
            if n == 0 {
                self.reusable = false;
                if dec.finish_on_close() {
                    return Ok(0);
                }
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                    what: "body",
                });
            }
        }
    }

    /// Read and discard the body (to reuse the connection), at most `max_bytes`.
    pub async fn skip_body(&mut self, kind: BodyKind, max_bytes: u64) -> Result<(), ClientError> {
        let addr = self.addr.clone();
        let mut seen = 0u64;
        self.read_body(kind, |d| {
            seen += d.len() as u64;
            if seen > max_bytes {
                Err(ClientError::Unexpected {
                    url: addr.clone(),
                    why: format!("body longer than {max_bytes} bytes"),
                })
            } else {
                Ok(())
            }
        })
        .await
        .map(|_| ())
    }
}

/// A HEAD (or GET) that follows redirects; returns the final URL, its response head and
/// the time to the first answer in milliseconds.
pub async fn head_follow(
    url: &Url,
    cfg: &ClientConfig,
) -> Result<(Url, ResponseHead, u64), ClientError> {
    let mut current = url.clone();
    let t0 = Instant::now();
    let mut latency_ms = None;
    for _ in 0..=cfg.max_redirects {
        let mut conn = Conn::connect(&current, cfg).await?;
        let head = conn
            .send(&Request {
                method: Method::Head,
                url: &current,
                range: None,
                headers: &[],
                body: b"",
                keep_alive: false,
            })
            .await?;
        latency_ms.get_or_insert(t0.elapsed().as_millis() as u64);
        if let Some(loc) = head.redirect_location() {
            current = current.join(loc).map_err(|e| ClientError::Http {
                addr: current.authority(),
                source: e,
            })?;
            continue;
        }
        return Ok((current, head, latency_ms.unwrap_or(0)));
    }
    Err(ClientError::TooManyRedirects {
        url: url.to_string(),
        limit: cfg.max_redirects,
    })
}

/// A request whose whole body is read into memory (at most `max_body_bytes`), e.g. JSON-RPC.
pub async fn fetch_small(
    url: &Url,
    method: Method,
    headers: &[(&str, &str)],
    body: &[u8],
    max_body_bytes: u64,
    cfg: &ClientConfig,
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let mut conn = Conn::connect(url, cfg).await?;
    let head = conn
        .send(&Request {
            method,
            url,
            range: None,
            headers,
            body,
            keep_alive: false,
        })
        .await?;
    let mut out = Vec::new();
    let u = url.to_string();
    conn.read_body(head.body_kind(method), |d| {
        if out.len() as u64 + d.len() as u64 > max_body_bytes {
            return Err(ClientError::Unexpected {
                url: u.clone(),
                why: format!("body longer than {max_body_bytes} bytes"),
            });
        }
        out.extend_from_slice(d);
        Ok(())
    })
    .await?;
    Ok((head, out))
}

/// Check a response to a ranged GET: 206 with the requested range and the expected total,
/// or (when `allow_full` and no range support) 200 with the expected length.
pub fn check_range_reply(
    url: &Url,
    head: &ResponseHead,
    range: Option<ByteRange>,
    total_bytes: u64,
) -> Result<(), ClientError> {
    let bad = |why: String| ClientError::Unexpected {
        url: url.to_string(),
        why,
    };
    match (head.status, range) {
        (206, Some(r)) => {
            let cr = head
                .content_range()
                .map_err(|e| ClientError::Http {
                    addr: url.authority(),
                    source: e,
                })?
                .ok_or_else(|| bad("206 without Content-Range".into()))?;
            if cr.range != Some(r) {
                return Err(bad(format!(
                    "asked bytes {}-{}, got {:?}",
                    r.first, r.last, cr.range
                )));
            }
            if let Some(t) = cr.total_bytes.filter(|t| *t != total_bytes) {
                return Err(bad(format!(
                    "file is now {t} bytes, expected {total_bytes}"
                )));
            }
            Ok(())
        }
        (200, None) => match head.content_length {
            Some(n) if n != total_bytes => Err(bad(format!(
                "file is now {n} bytes, expected {total_bytes}"
            ))),
            _ => Ok(()),
        },
        (200, Some(_)) => Err(bad("range ignored (200 instead of 206)".into())),
        (s, _) => Err(bad(format!("HTTP status {s}"))),
    }
}
