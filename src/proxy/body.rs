//! Bodies and headers as they cross the proxy: one boxed body type, hop-by-hop stripping, error pages.

use std::pin::Pin;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::upstream::pool::{BoxError, OutBody};

/// The body of every response the data plane sends. Not `Send`: it may run Lua `body_filter`s on the
/// worker's own VM while it streams.
pub(crate) type ProxyBody = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError>>>;

/// Wraps any body into [`ProxyBody`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(body.map_err(Into::into))
}

/// Wraps a body sent upstream (it crosses into the connection task, so it must be `Send`).
pub(crate) fn outbound<B>(body: B) -> OutBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete in-memory body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(Full::new(bytes.into()))
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus those named in
/// `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass notes which hop-by-hop headers are present; most messages carry none, or only
    // `Connection: keep-alive`.
    let mut present = [false; 8];
    // Whether a `Connection` value names more than the usual option.
    let mut names_headers = false;
    for (name, value) in headers.iter() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
            names_headers |= i == 0 && !is_connection_option(value.as_bytes());
        }
    }
    if names_headers {
        for name in connection_named(headers) {
            headers.remove(name);
        }
    }
    for (hop, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(hop);
        }
    }
}

/// Whether `name` is hop-by-hop by itself (not only because a `Connection` header names it).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// The headers `Connection` names, which are hop-by-hop too. The usual values name none, and take no
/// parsing (nor allocation).
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for (name, value) in headers {
        if name != header::CONNECTION || is_connection_option(value.as_bytes()) {
            continue;
        }
        let Ok(text) = value.to_str() else {
            continue;
        };
        named.extend(
            text.split(',')
                .map(str::trim)
                .filter(|token| !is_connection_option(token.as_bytes()))
                .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok()),
        );
    }
    named
}

/// `Connection` first: the headers it names go too.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Where a header is in [`HOP_BY_HOP`]. A match on the name's text: this runs for every header of
/// every request and response.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "te" => 1,
        "trailer" => 2,
        "transfer-encoding" => 3,
        "upgrade" => 4,
        "proxy-authorization" => 5,
        "keep-alive" => 6,
        "proxy-connection" => 7,
        _ => return None,
    })
}

/// The usual `Connection` options, which are not header names (`keep-alive` goes anyway).
fn is_connection_option(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
}

/// A JSON error body as APISIX writes its own errors.
pub(crate) fn json_error(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error_msg": msg }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// nginx's HTML error page, which APISIX serves for proxy failures (502, 503, 504, 413).
pub(crate) fn error_page(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>moongate</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn the_usual_connection_values_name_no_header() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::SERVER, HeaderValue::from_static("origin"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::SERVER));
    }

    #[test]
    fn every_hop_by_hop_header_is_found_by_name() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::CONTENT_LENGTH), None);
    }
}
