//! One HTTP/1.1 connection to an upstream, driven from the task of the request it carries.
//!
//! hyper's client runs every connection as a task of its own and passes it each request and response
//! through channels. Here the request's own task writes the request and reads the response, as nginx
//! and Pingora do, so forwarding a request costs no hand-off between tasks. The response head is
//! parsed with `httparse` and its header values share the bytes read.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, response};
use http_body::Body;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::pool::{BoxError, OutBody, UpstreamHead};

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have.
const MAX_HEADERS: usize = 100;
/// How much room each read asks for.
const READ_SIZE: usize = 16 * 1024;
/// The most trailer bytes read (and dropped) after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// The transport under a connection.
pub(crate) enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_native_tls::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid chunked response body")]
    Chunk,
    #[error("request body: {0}")]
    RequestBody(BoxError),
    #[error("the request body does not match its content-length")]
    RequestLength,
}

impl H1Error {
    /// A failure that a connection closed while idle in the pool shows when it is used: nothing
    /// of a response came back.
    pub(crate) fn is_stale_connection(&self) -> bool {
        match self {
            H1Error::Closed => true,
            H1Error::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// How a response body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields (dropped) after the last chunk; the count of bytes read so far.
    Trailers(usize),
}

impl Decoder {
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    /// The exact length left, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

/// A parsed response head.
pub(crate) struct Head {
    pub(crate) parts: response::Parts,
    pub(crate) decoder: Decoder,
    /// Whether the connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// How the request body is framed on the wire.
enum Outgoing {
    Length(u64),
    Chunked,
    Done,
}

/// One keep-alive connection to an upstream.
pub(crate) struct Connection {
    io: Io,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request bytes not yet written; kept for the next request's head.
    write: Vec<u8>,
    written: usize,
    /// The upstream closed its side.
    eof: bool,
    /// The request was cut short or the response not read to its end: never reuse.
    broken: bool,
}

impl Connection {
    pub(crate) fn new(io: Io) -> Connection {
        Connection {
            io,
            read: BytesMut::new(),
            write: Vec::with_capacity(1024),
            written: 0,
            eof: false,
            broken: false,
        }
    }

    /// Whether an idle connection can carry another request: the upstream has not closed it, and
    /// sent nothing unasked. Costs no system call while the socket has nothing to read.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.is_clean() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Whether the exchange just finished left the connection fit for another request.
    pub(crate) fn is_clean(&self) -> bool {
        !self.broken && !self.eof && self.read.is_empty()
    }

    /// Writes the request. Stops early, with the connection marked unfit for reuse, when the
    /// upstream answers (or closes) before the request body has all been sent.
    pub(crate) async fn send(
        &mut self,
        request: UpstreamHead<'_>,
        body: &mut OutBody,
    ) -> Result<(), H1Error> {
        let mut outgoing = self.encode_head(&request, body);
        poll_fn(|cx| self.poll_send(cx, body, &mut outgoing)).await
    }

    fn encode_head(&mut self, request: &UpstreamHead<'_>, body: &OutBody) -> Outgoing {
        let w = &mut self.write;
        w.clear();
        self.written = 0;
        w.extend_from_slice(request.head.method.as_str().as_bytes());
        w.push(b' ');
        let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        w.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
        w.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        let outgoing = outgoing_framing(request, body);
        match outgoing {
            Some(framing) => {
                w.extend_from_slice(b"\r\n");
                framing
            }
            None if body.is_end_stream() => {
                if matches!(
                    request.head.method,
                    Method::POST | Method::PUT | Method::PATCH
                ) {
                    w.extend_from_slice(b"content-length: 0\r\n");
                }
                w.extend_from_slice(b"\r\n");
                Outgoing::Done
            }
            None => match body.size_hint().exact() {
                Some(len) => {
                    let _ = write!(w, "content-length: {len}\r\n\r\n");
                    Outgoing::Length(len)
                }
                None => {
                    w.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    Outgoing::Chunked
                }
            },
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut OutBody,
        outgoing: &mut Outgoing,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            while self.written < self.write.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                    }
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                    Poll::Pending => return self.poll_early_response(cx),
                }
            }
            self.write.clear();
            self.written = 0;
            if matches!(outgoing, Outgoing::Done) {
                return Pin::new(&mut self.io).poll_flush(cx).map_err(H1Error::from);
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.encode_data(&data, outgoing)?;
                    }
                    if body.is_end_stream() {
                        self.encode_end(outgoing)?;
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    self.broken = true;
                    return Poll::Ready(Err(H1Error::RequestBody(err)));
                }
                Poll::Ready(None) => self.encode_end(outgoing)?,
                Poll::Pending => return self.poll_early_response(cx),
            }
        }
    }

    fn encode_data(&mut self, data: &Bytes, outgoing: &mut Outgoing) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        match outgoing {
            Outgoing::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    self.broken = true;
                    return Err(H1Error::RequestLength);
                }
                *left -= len;
                self.write.extend_from_slice(data);
            }
            Outgoing::Chunked => {
                let _ = write!(self.write, "{:x}\r\n", data.len());
                self.write.extend_from_slice(data);
                self.write.extend_from_slice(b"\r\n");
            }
            Outgoing::Done => {
                self.broken = true;
                return Err(H1Error::RequestLength);
            }
        }
        Ok(())
    }

    fn encode_end(&mut self, outgoing: &mut Outgoing) -> Result<(), H1Error> {
        match outgoing {
            Outgoing::Length(0) | Outgoing::Done => {}
            Outgoing::Length(_) => {
                self.broken = true;
                return Err(H1Error::RequestLength);
            }
            Outgoing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
        }
        *outgoing = Outgoing::Done;
        Ok(())
    }

    /// While the request cannot make progress: whether the upstream has answered (or closed) in the
    /// meantime. A final answer stops the sending, and the response is read; interim ones (the
    /// `100 Continue` an `Expect` asks for) are dropped and the sending goes on. Plain TCP only: a
    /// TLS session is not read while one of its writes is pending.
    fn poll_early_response(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        if !matches!(self.io, Io::Tcp(_)) {
            return Poll::Pending;
        }
        loop {
            match ready!(self.poll_fill(cx)) {
                Err(err) => return Poll::Ready(Err(err.into())),
                Ok(0) => {
                    self.broken = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(_) if self.final_head_arrived()? => {
                    self.broken = true;
                    return Poll::Ready(Ok(()));
                }
                // Read on until the read is pending, so that this task is woken by what comes next.
                Ok(_) => {}
            }
        }
    }

    /// Drops the complete interim (1xx) heads at the front of what has been read; whether a final
    /// response head (or more than a head's worth of bytes) is there.
    fn final_head_arrived(&mut self) -> Result<bool, H1Error> {
        loop {
            let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let parsed = parse_response(&self.read, &mut fields, &mut self.broken)?;
            match parsed {
                Some((len, parsed)) if parsed.code.is_some_and(is_interim) => {
                    self.read.advance(len);
                }
                Some(_) => return Ok(true),
                None => return Ok(self.read.len() >= MAX_HEAD),
            }
        }
    }

    /// Reads one read's worth into the buffer; `Ok(0)` means the upstream closed its side.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.eof {
            return Poll::Ready(Ok(0));
        }
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))?;
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(n))
    }

    /// Reads the response head to the request made with `method`, skipping interim (1xx) responses.
    pub(crate) async fn read_head(&mut self, method: &Method) -> Result<Head, H1Error> {
        poll_fn(|cx| self.poll_head(cx, method)).await
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, method: &Method) -> Poll<Result<Head, H1Error>> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = self.parse_head(method)? {
                    return Poll::Ready(Ok(head));
                }
                if self.read.len() >= MAX_HEAD {
                    self.broken = true;
                    return Poll::Ready(Err(H1Error::HeadTooLarge));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                self.broken = true;
                return Poll::Ready(Err(H1Error::Closed));
            }
        }
    }

    fn parse_head(&mut self, method: &Method) -> Result<Option<Head>, H1Error> {
        loop {
            let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let parsed = parse_response(&self.read, &mut fields, &mut self.broken)?;
            let Some((len, parsed)) = parsed else {
                return Ok(None);
            };
            let code = parsed.code.unwrap_or(0);
            let version = match parsed.version {
                Some(0) => Version::HTTP_10,
                _ => Version::HTTP_11,
            };
            // Where each name and value lies in the buffer, so that the values can share it.
            let base = self.read.as_ptr() as usize;
            let spans: SmallVec<[_; 16]> = parsed
                .headers
                .iter()
                .map(|field| {
                    let name = field.name.as_ptr() as usize - base;
                    let value = field.value.as_ptr() as usize - base;
                    (
                        name..name + field.name.len(),
                        value..value + field.value.len(),
                    )
                })
                .collect();
            let bytes = self.read.split_to(len).freeze();
            if code == 101 {
                self.broken = true;
                return Err(H1Error::Invalid("unexpected 101 Switching Protocols"));
            }
            if is_interim(code) {
                continue;
            }
            let status = StatusCode::from_u16(code).map_err(|_| self.invalid("status code"))?;
            let mut headers = HeaderMap::with_capacity(spans.len());
            // Noted on the way rather than looked up in the map afterwards.
            let mut connection = ConnectionOptions::default();
            let mut transfer_encoding = false;
            for (name, value) in spans {
                let name = header_name(&bytes[name]).map_err(|_| self.invalid("header name"))?;
                let value = HeaderValue::from_maybe_shared(bytes.slice(value))
                    .map_err(|_| self.invalid("header value"))?;
                if name == header::CONNECTION {
                    connection.note(value.as_bytes());
                } else if name == header::TRANSFER_ENCODING {
                    transfer_encoding = true;
                }
                headers.append(name, value);
            }
            let (decoder, delimited) =
                self.framing(method, status, &mut headers, transfer_encoding)?;
            let keep_alive = delimited
                && match version {
                    Version::HTTP_11 => !connection.close,
                    _ => connection.keep_alive,
                };
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            parts.version = version;
            parts.headers = headers;
            return Ok(Some(Head {
                parts,
                decoder,
                keep_alive,
            }));
        }
    }

    /// How the body of a response is delimited (RFC 9112, section 6.3), and whether its end is
    /// known without the connection closing.
    fn framing(
        &mut self,
        method: &Method,
        status: StatusCode,
        headers: &mut HeaderMap,
        transfer_encoding: bool,
    ) -> Result<(Decoder, bool), H1Error> {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Decoder::Done, true));
        }
        if transfer_encoding {
            let chunked = headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            // Transfer-Encoding overrides Content-Length; a message with both may be an attempt
            // at smuggling, so the connection is not reused after it.
            let both = headers.remove(header::CONTENT_LENGTH).is_some();
            if chunked {
                return Ok((Decoder::Chunked(Chunk::Size), !both));
            }
            return Ok((Decoder::Eof, false));
        }
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            let parsed = value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(self.invalid("content-length")),
            }
        }
        Ok(match length {
            Some(n) => (Decoder::Length(n), true),
            None => (Decoder::Eof, false),
        })
    }

    fn invalid(&mut self, what: &'static str) -> H1Error {
        self.broken = true;
        H1Error::Invalid(what)
    }

    /// The whole rest of the body when it has already been read (a short response usually comes
    /// in the same read as its head).
    pub(crate) fn take_whole(&mut self, decoder: &mut Decoder) -> Option<Bytes> {
        let n = usize::try_from(decoder.remaining()?).ok()?;
        if n > self.read.len() {
            return None;
        }
        *decoder = Decoder::Done;
        Some(self.read.split_to(n).freeze())
    }

    /// The next piece of the response body; `None` at its end.
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Decoder,
    ) -> Poll<Option<Result<Bytes, H1Error>>> {
        let result = self.poll_body_inner(cx, decoder);
        if let Poll::Ready(Some(Err(_))) = result {
            self.broken = true;
            *decoder = Decoder::Done;
        }
        result
    }

    fn poll_body_inner(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Decoder,
    ) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            match decoder {
                Decoder::Done | Decoder::Length(0) => {
                    *decoder = Decoder::Done;
                    return Poll::Ready(None);
                }
                Decoder::Length(left) => {
                    if self.read.is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Closed)));
                    }
                    let n = self.take_up_to(left);
                    return Poll::Ready(Some(Ok(n)));
                }
                Decoder::Eof => {
                    if self.read.is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        *decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(self.read.split().freeze())));
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    if self.read.is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Closed)));
                    }
                    let data = self.take_up_to(left);
                    if *left == 0 {
                        *decoder = Decoder::Chunked(Chunk::DataEnd);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Decoder::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = self.read.split_to(used);
                        *decoder = Decoder::Chunked(if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) => ready!(self.fill_or_fail(cx))?,
                    Err(_) => return Poll::Ready(Some(Err(H1Error::Chunk))),
                },
                Decoder::Chunked(Chunk::DataEnd) => {
                    if self.read.len() < 2 {
                        ready!(self.fill_or_fail(cx))?;
                        continue;
                    }
                    if &self.read[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(H1Error::Chunk)));
                    }
                    let _ = self.read.split_to(2);
                    *decoder = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers(seen)) => {
                    match self.read.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            let _ = self.read.split_to(2);
                            *decoder = Decoder::Done;
                            return Poll::Ready(None);
                        }
                        Some(end) => {
                            *seen += end + 2;
                            let _ = self.read.split_to(end + 2);
                        }
                        None => {
                            if *seen + self.read.len() > MAX_TRAILERS {
                                return Poll::Ready(Some(Err(H1Error::Chunk)));
                            }
                            ready!(self.fill_or_fail(cx))?;
                        }
                    }
                }
            }
        }
    }

    /// Up to `left` bytes of what has been read, counted off `left`.
    fn take_up_to(&mut self, left: &mut u64) -> Bytes {
        let n = usize::try_from(*left).map_or(self.read.len(), |l| l.min(self.read.len()));
        *left -= n as u64;
        self.read.split_to(n).freeze()
    }

    /// Reads more of a body that is not complete; the upstream closing now is an error.
    fn fill_or_fail(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        match ready!(self.poll_fill(cx))? {
            0 => Poll::Ready(Err(H1Error::Closed)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The name of a response header. The spellings servers commonly send (`Content-Type`, or
/// `content-type`) map straight to their constants; any other goes through
/// `HeaderName::from_bytes`, which lower-cases and checks it byte by byte.
fn header_name(raw: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    let common = match raw {
        b"Date" | b"date" => header::DATE,
        b"ETag" | b"etag" => header::ETAG,
        b"Vary" | b"vary" => header::VARY,
        b"Server" | b"server" => header::SERVER,
        b"Expires" | b"expires" => header::EXPIRES,
        b"Location" | b"location" => header::LOCATION,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(raw),
    };
    Ok(common)
}

/// An interim (1xx) response, skipped on the way to the final one. 101 is not: it would switch
/// the connection's protocol.
fn is_interim(code: u16) -> bool {
    (100..200).contains(&code) && code != 101
}

/// Parses the response head at the front of `buf`, if it is all there. An invalid head sets
/// `broken`: the connection cannot be reused.
fn parse_response<'b>(
    buf: &'b [u8],
    fields: &'b mut [MaybeUninit<httparse::Header<'b>>],
    broken: &mut bool,
) -> Result<Option<(usize, httparse::Response<'b, 'b>)>, H1Error> {
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    match config.parse_response_with_uninit_headers(&mut parsed, buf, fields) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((len, parsed))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(err) => {
            *broken = true;
            Err(err.into())
        }
    }
}

/// The framing the request's own headers fix: its Content-Length, or a chunked Transfer-Encoding.
fn outgoing_framing(request: &UpstreamHead<'_>, body: &OutBody) -> Option<Outgoing> {
    if let Some(te) = request.header(&header::TRANSFER_ENCODING)
        && te.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return Some(Outgoing::Chunked);
    }
    let length = request.header(&header::CONTENT_LENGTH)?;
    let length = length.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(if length == 0 && body.is_end_stream() {
        Outgoing::Done
    } else {
        Outgoing::Length(length)
    })
}

/// The options a response's `Connection` headers name.
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
}

impl ConnectionOptions {
    /// Notes the options in one `Connection` value (a comma-separated list).
    fn note(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A connection to a loopback peer, and the peer's end.
    async fn pair() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Connection::new(Io::Tcp(client)), server)
    }

    fn get(path: &str) -> http::request::Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = path.parse().expect("uri");
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("up"));
        parts
    }

    #[test]
    fn common_header_names_are_the_names_from_bytes_gives() {
        let names = [
            "Date",
            "ETag",
            "Vary",
            "Server",
            "Expires",
            "Location",
            "Connection",
            "Set-Cookie",
            "Content-Type",
            "Accept-Ranges",
            "Cache-Control",
            "Last-Modified",
            "Content-Length",
            "Content-Encoding",
            "Transfer-Encoding",
            "X-Custom",
            "Bad Name",
            "",
        ];
        for name in names {
            for spelling in [
                name.to_owned(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                let fast = header_name(spelling.as_bytes()).ok();
                let general = HeaderName::from_bytes(spelling.as_bytes()).ok();
                assert_eq!(fast, general, "{spelling:?}");
            }
        }
    }

    fn empty() -> OutBody {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn full(data: &'static str) -> OutBody {
        http_body_util::Full::new(Bytes::from_static(data.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// A body that yields what arrives on a channel, of unknown length.
    struct Channel(tokio::sync::mpsc::Receiver<&'static str>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|piece| piece.map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))))
        }
    }

    /// A body of unknown length that yields `pieces`, then ends, or waits for more while the
    /// returned sender lives.
    fn pieces(pieces: &[&'static str]) -> (OutBody, tokio::sync::mpsc::Sender<&'static str>) {
        let (tx, rx) = tokio::sync::mpsc::channel(pieces.len().max(1));
        for piece in pieces {
            tx.try_send(*piece).expect("room for every piece");
        }
        (Channel(rx).boxed_unsync(), tx)
    }

    /// A connection that sent `GET /`, and its peer, which answered with `response`.
    async fn answered_get(response: &[u8]) -> (Connection, TcpStream) {
        let (mut conn, mut peer) = pair().await;
        conn.send(UpstreamHead::unchanged(&get("/")), &mut empty())
            .await
            .expect("send");
        received(&mut peer, 0).await;
        peer.write_all(response).await.expect("write");
        (conn, peer)
    }

    /// Reads what the peer received up to the end of a request head, plus `body` more bytes.
    async fn received(peer: &mut TcpStream, body: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= end + 4 + body
            {
                return String::from_utf8(got).expect("utf8");
            }
            let n = peer.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "peer saw EOF after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    }

    async fn body_of(conn: &mut Connection, decoder: &mut Decoder) -> Result<Vec<u8>, H1Error> {
        let mut out = Vec::new();
        if let Some(whole) = conn.take_whole(decoder) {
            return Ok(whole.to_vec());
        }
        while let Some(data) = poll_fn(|cx| conn.poll_body(cx, decoder)).await {
            out.extend_from_slice(&data?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_get_and_a_sized_response_leave_the_connection_reusable() {
        let (mut conn, mut peer) = pair().await;
        let parts = get("/a?b=c");
        conn.send(UpstreamHead::unchanged(&parts), &mut empty())
            .await
            .expect("send");
        let request = received(&mut peer, 0).await;
        assert_eq!(request, "GET /a?b=c HTTP/1.1\r\nhost: up\r\n\r\n");
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello")
            .await
            .expect("write");
        let mut head = conn.read_head(&Method::GET).await.expect("head");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert!(head.keep_alive);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(
            body_of(&mut conn, &mut head.decoder).await.expect("body"),
            b"hello"
        );
        assert!(conn.is_clean());
        assert!(conn.is_reusable());
        drop(peer);
        // The close reaches the socket a moment later.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.is_reusable());
    }

    #[tokio::test]
    async fn a_chunked_response_is_decoded_across_reads_with_extensions_and_trailers() {
        let (mut conn, mut peer) = pair().await;
        conn.send(UpstreamHead::unchanged(&get("/")), &mut empty())
            .await
            .expect("send");
        received(&mut peer, 0).await;
        let server = tokio::spawn(async move {
            for piece in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                "lo\r\n",
                "6\r\n world\r\n0\r\nX-Trailer: t\r\n",
                "\r\n",
            ] {
                peer.write_all(piece.as_bytes()).await.expect("write");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            peer
        });
        let mut head = conn.read_head(&Method::GET).await.expect("head");
        assert!(matches!(head.decoder, Decoder::Chunked(Chunk::Size)));
        assert_eq!(
            body_of(&mut conn, &mut head.decoder).await.expect("body"),
            b"hello world"
        );
        assert!(head.keep_alive && conn.is_clean());
        drop(server.await);
    }

    #[tokio::test]
    async fn connection_options_decide_whether_the_connection_is_kept() {
        for (response, kept) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: x-a , CLOSE\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: x-a\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
        ] {
            let (mut conn, _peer) = answered_get(response.as_bytes()).await;
            let head = conn.read_head(&Method::GET).await.expect("head");
            assert_eq!(head.keep_alive, kept, "{response:?}");
        }
    }

    #[tokio::test]
    async fn a_response_without_a_length_runs_to_the_close_and_ends_the_connection() {
        let (mut conn, peer) = answered_get(b"HTTP/1.0 200 OK\r\n\r\nall of it").await;
        drop(peer);
        let mut head = conn.read_head(&Method::GET).await.expect("head");
        assert!(!head.keep_alive);
        assert_eq!(
            body_of(&mut conn, &mut head.decoder).await.expect("body"),
            b"all of it"
        );
        assert!(!conn.is_clean());
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_whatever_their_headers_say() {
        for (method, status) in [
            (Method::HEAD, "200 OK"),
            (Method::GET, "204 No Content"),
            (Method::GET, "304 Not Modified"),
        ] {
            let (mut conn, mut peer) = pair().await;
            let mut parts = get("/");
            parts.method = method.clone();
            conn.send(UpstreamHead::unchanged(&parts), &mut empty())
                .await
                .expect("send");
            received(&mut peer, 0).await;
            let response = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            peer.write_all(response.as_bytes()).await.expect("write");
            let mut head = conn.read_head(&method).await.expect("head");
            assert_eq!(
                conn.take_whole(&mut head.decoder).as_deref(),
                Some(&b""[..])
            );
            assert!(head.keep_alive && conn.is_clean(), "{method} {status}");
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (mut conn, _peer) = answered_get(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await;
        let head = conn.read_head(&Method::GET).await.expect("head");
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert!(head.parts.headers.get("link").is_none());
    }

    #[tokio::test]
    async fn ambiguous_framing_is_refused_or_not_reused() {
        let (mut conn, _peer) =
            answered_get(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
                .await;
        let err = conn.read_head(&Method::GET).await.err().expect("refused");
        assert!(matches!(err, H1Error::Invalid("content-length")), "{err}");
        assert!(!conn.is_clean());

        let (mut conn, _peer) = answered_get(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
        let mut head = conn.read_head(&Method::GET).await.expect("head");
        assert!(head.parts.headers.get(header::CONTENT_LENGTH).is_none());
        assert!(!head.keep_alive);
        assert_eq!(
            body_of(&mut conn, &mut head.decoder).await.expect("body"),
            b"ok"
        );
    }

    #[tokio::test]
    async fn a_response_head_too_large_or_cut_short_is_an_error() {
        let (mut conn, mut peer) = pair().await;
        conn.send(UpstreamHead::unchanged(&get("/")), &mut empty())
            .await
            .expect("send");
        received(&mut peer, 0).await;
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        let writer = tokio::spawn(async move {
            let _ = peer.write_all(big.as_bytes()).await;
            peer
        });
        let err = conn.read_head(&Method::GET).await.err().expect("too large");
        assert!(matches!(err, H1Error::HeadTooLarge), "{err}");
        drop(writer.await);

        let (mut conn, peer) = answered_get(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        drop(peer);
        let err = conn.read_head(&Method::GET).await.err().expect("cut short");
        assert!(err.is_stale_connection(), "{err}");
    }

    #[tokio::test]
    async fn added_headers_follow_the_requests_own() {
        let (mut conn, mut peer) = pair().await;
        let added = [(
            HeaderName::from_static("x-real-ip"),
            HeaderValue::from_static("10.0.0.1"),
        )];
        let parts = get("/a?b=1");
        let head = UpstreamHead {
            added: &added,
            ..UpstreamHead::unchanged(&parts)
        };
        conn.send(head, &mut empty()).await.expect("send");
        let request = received(&mut peer, 0).await;
        assert_eq!(
            request,
            "GET /a?b=1 HTTP/1.1\r\nhost: up\r\nx-real-ip: 10.0.0.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_length_or_chunked() {
        let (mut conn, mut peer) = pair().await;
        let mut parts = get("/");
        parts.method = Method::POST;
        conn.send(UpstreamHead::unchanged(&parts), &mut full("abc"))
            .await
            .expect("send");
        let request = received(&mut peer, 3).await;
        assert_eq!(
            request,
            "POST / HTTP/1.1\r\nhost: up\r\ncontent-length: 3\r\n\r\nabc"
        );

        let (mut conn, mut peer) = pair().await;
        let (mut body, ended) = pieces(&["ab", "", "cde"]);
        drop(ended);
        conn.send(UpstreamHead::unchanged(&parts), &mut body)
            .await
            .expect("send");
        let request = received(&mut peer, 20).await;
        assert_eq!(
            request,
            "POST / HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );

        let (mut conn, mut peer) = pair().await;
        conn.send(UpstreamHead::unchanged(&parts), &mut empty())
            .await
            .expect("send");
        let request = received(&mut peer, 0).await;
        assert_eq!(
            request,
            "POST / HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );

        let (mut conn, _peer) = pair().await;
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        let err = conn
            .send(UpstreamHead::unchanged(&parts), &mut full("abc"))
            .await
            .expect_err("too long");
        assert!(matches!(err, H1Error::RequestLength), "{err}");
        assert!(!conn.is_clean());
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_sent_stops_the_sending() {
        let (mut conn, mut peer) = pair().await;
        let mut parts = get("/upload");
        parts.method = Method::PUT;
        let reply = tokio::spawn(async move {
            received(&mut peer, 0).await;
            peer.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            peer
        });
        let (mut body, _more_to_come) = pieces(&["first"]);
        conn.send(UpstreamHead::unchanged(&parts), &mut body)
            .await
            .expect("send stops");
        let head = conn.read_head(&Method::PUT).await.expect("head");
        assert_eq!(head.parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!conn.is_clean(), "a request cut short is not reused");
        drop(reply.await);
    }

    #[tokio::test]
    async fn a_100_continue_during_the_upload_does_not_stop_it() {
        let (mut conn, mut peer) = pair().await;
        let mut parts = get("/upload");
        parts.method = Method::PUT;
        parts
            .headers
            .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let upstream = tokio::spawn(async move {
            // The head and the first piece, then the interim answer, then the rest of the body.
            let first = received(&mut peer, "5\r\nfirst\r\n".len()).await;
            peer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .expect("write");
            let rest = received_more(&mut peer, "4\r\nlast\r\n0\r\n\r\n".len()).await;
            peer.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            (first, rest, peer)
        });
        let (mut body, tx) = pieces(&["first"]);
        let feeding = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            tx.send("last").await.expect("queued");
            drop(tx);
        };
        let (sent, ()) = tokio::join!(
            conn.send(UpstreamHead::unchanged(&parts), &mut body),
            feeding
        );
        sent.expect("the whole body is sent");
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            conn.read_head(&Method::PUT),
        );
        let head = answer.await.expect("answered in time").expect("head");
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert!(conn.is_clean(), "the exchange completed normally");
        let (first, rest, _peer) = upstream.await.expect("upstream");
        assert!(first.ends_with("\r\n\r\n5\r\nfirst\r\n"), "{first:?}");
        assert_eq!(rest, "4\r\nlast\r\n0\r\n\r\n");
    }

    /// Reads exactly `n` more bytes.
    async fn received_more(peer: &mut TcpStream, n: usize) -> String {
        let mut buf = vec![0u8; n];
        peer.read_exact(&mut buf).await.expect("read");
        String::from_utf8(buf).expect("utf8")
    }
}
