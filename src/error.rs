//! Who caused a data-plane failure, and the one place that turns it into a status code.

use http::StatusCode;

/// The party responsible for a failed request. Drives the status code and whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    /// The client sent something we refuse (too large, malformed).
    Client,
    /// The upstream (or function) could not be reached or misbehaved.
    Upstream,
    /// Moongate itself failed (bad config state, plugin error).
    Internal,
}

/// What the data plane reports about a failure, before it becomes a response.
pub(crate) trait Classify {
    /// Who caused it.
    fn source(&self) -> ErrorSource;
    /// Whether a timer expired (504 rather than 502 for upstream failures).
    fn is_timeout(&self) -> bool;
    /// A client error's own status (413, 400, ...); ignored for other sources.
    fn client_status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// The one mapping from a classified failure to the status the client sees.
pub(crate) fn status_for(err: &dyn Classify) -> StatusCode {
    match (err.source(), err.is_timeout()) {
        (ErrorSource::Client, _) => err.client_status(),
        (ErrorSource::Upstream, true) => StatusCode::GATEWAY_TIMEOUT,
        (ErrorSource::Upstream, false) => StatusCode::BAD_GATEWAY,
        (ErrorSource::Internal, _) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(ErrorSource, bool);
    impl Classify for E {
        fn source(&self) -> ErrorSource {
            self.0
        }
        fn is_timeout(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn upstream_timeout_is_504_never_503() {
        assert_eq!(
            status_for(&E(ErrorSource::Upstream, true)),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status_for(&E(ErrorSource::Upstream, false)),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status_for(&E(ErrorSource::Internal, false)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_for(&E(ErrorSource::Client, false)),
            StatusCode::BAD_REQUEST
        );
    }
}
