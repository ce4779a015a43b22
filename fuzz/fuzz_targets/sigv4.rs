//! SigV4 signing of arbitrary requests.
//!
//! Two kinds of input, chosen by the fuzzer:
//!
//! - `Raw`: any strings and bytes for method, path, query, headers, body, credentials and scope. The
//!   signer never fails, so the properties are: no panic; `sign` and `SigningKeyCache::sign` agree
//!   and are stable across calls; the `Authorization` header is well formed; `canonical_query` is a
//!   fixed point and signing its result signs the same canonical query.
//! - `Shaped`: requests built from the pieces the unit test `agrees_with_aws_sigv4_on_random_requests`
//!   uses (valid HTTP methods, URI-safe path and query pieces, token header names, printable ASCII
//!   header values), where the `aws-sigv4` crate accepts the request as well. The property: both
//!   signers add the same headers, signature included. Inputs outside that subset are excluded on
//!   purpose, because the two signers differ there by design: `aws-sigv4` refuses invalid header
//!   names and values and URIs `http::Uri` cannot parse, trims only spaces where Moongate folds all
//!   ASCII whitespace as botocore does, and decodes query escapes into UTF-8 lossily (`%FF` becomes
//!   U+FFFD) where Moongate keeps the byte.

#![no_main]

use std::time::SystemTime;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moongate::aws::sigv4::{
    ALGORITHM, Credentials, Payload, SessionTokenMode, SignableRequest, SigningKeyCache,
    SigningParams, SigningSettings, canonical_query, sign,
};
use time::{OffsetDateTime, UtcOffset};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const PATH_PIECES: &[&str] = &[
    "a",
    "Z",
    "09",
    "-",
    ".",
    "_",
    "~",
    "%20",
    "%2F",
    "%3A",
    "%2f",
    "%E1%88%B4",
    "%",
    "%zz",
    ":",
    "@",
    "!",
    "$",
    "'",
    "(",
    ")",
    "*",
    "+",
    ",",
    ";",
    "=",
    "&",
    "fn",
    "arn",
    "%40",
    "%3D",
];
const QUERY_PIECES: &[&str] = &[
    "a",
    "B",
    "7",
    "-",
    ".",
    "_",
    "~",
    "+",
    "/",
    "%2B",
    "%2b",
    "%20",
    "%3D",
    "%2F",
    "%26",
    "%E1%88%B4",
    "%c3%a9",
    "%7E",
    "%41",
    ":",
    "@",
    "!",
    "$",
    "'",
    "(",
    ")",
    "*",
    ",",
    ";",
    "?",
    "%",
    "%zz",
    "%4",
    "Param",
    "x",
];
const HEADER_NAMES: &[&str] = &[
    "content-type",
    "Content-Type",
    "x-amz-invocation-type",
    "X-Amz-Log-Type",
    "x-amz-client-context",
    "my-header",
    "My-Header",
    "x-custom",
    "accept",
    "content-encoding",
    "X-Amz-Target",
    "x-amz-meta-a",
    "x-amz-date",
    "X-Amz-Security-Token",
    "x-amz-content-sha256",
    "authorization",
    "content-length",
    "x-api-key",
    "host",
];
const REGIONS: &[&str] = &["us-east-1", "eu-west-3", "ap-southeast-2"];
const SERVICES: &[&str] = &["lambda", "execute-api", "sts", "s3"];

#[derive(Arbitrary, Debug)]
enum Case {
    Raw(Raw),
    Shaped(Shaped),
}

#[derive(Arbitrary, Debug)]
struct Raw {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    precomputed: Option<String>,
    secret: String,
    token: Option<String>,
    region: String,
    service: String,
    time: i64,
    offset: i32,
    settings: u8,
}

#[derive(Arbitrary, Debug)]
struct Shaped {
    method: u8,
    path: Vec<u8>,
    query: Vec<(Vec<u8>, u8, Vec<u8>)>,
    host_port: Option<u16>,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
    precomputed: Option<bool>,
    token: Option<Vec<u8>>,
    region: u8,
    service: u8,
    time: u32,
    offset: i16,
    settings: u8,
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn settings_from(bits: u8) -> SigningSettings {
    SigningSettings {
        double_uri_encode: bits & 1 == 0,
        payload_checksum_header: bits & 2 != 0,
        session_token_mode: if bits & 4 != 0 {
            SessionTokenMode::Omit
        } else {
            SessionTokenMode::Include
        },
    }
}

fn time_from(seconds: i64, offset: i32) -> OffsetDateTime {
    let utc = OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    UtcOffset::from_whole_seconds(offset % 86_400)
        .ok()
        .and_then(|offset| utc.checked_to_offset(offset))
        .unwrap_or(utc)
}

/// Signs with both the cold path and a warm cache, twice, and checks they agree and look right.
fn sign_checked(
    req: &SignableRequest<'_>,
    params: &SigningParams<'_>,
) -> Vec<(&'static str, String)> {
    let cold = sign(req, params);
    let mut cache = SigningKeyCache::new();
    let warm_first = cache.sign(req, params);
    let warm_second = cache.sign(req, params);
    assert_eq!(
        cold.headers(),
        warm_first.headers(),
        "cold and cached signing differ"
    );
    assert_eq!(
        warm_first.headers(),
        warm_second.headers(),
        "signing is not stable"
    );
    assert_eq!(cold.canonical_request(), warm_second.canonical_request());
    let authorization = cold.authorization();
    assert!(
        authorization.starts_with(ALGORITHM) && authorization.contains(" Credential="),
        "malformed Authorization: {authorization:?}"
    );
    let signature = cold.signature();
    assert!(
        signature.len() == 64
            && signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "malformed signature: {signature:?}"
    );
    cold.into_headers()
}

fn raw(case: &Raw) {
    let credentials = Credentials::new(AKID, case.secret.clone(), case.token.clone());
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let payload = match &case.precomputed {
        Some(hash) => Payload::Precomputed(hash),
        None => Payload::Bytes(&case.body),
    };
    let req = SignableRequest {
        method: &case.method,
        path: &case.path,
        query: &case.query,
        headers: &headers,
        payload,
    };
    let params = SigningParams {
        credentials: &credentials,
        region: &case.region,
        service: &case.service,
        time: time_from(case.time, case.offset),
        settings: settings_from(case.settings),
    };
    sign_checked(&req, &params);

    // The canonical query is a fixed point, and sending it signs exactly what was meant.
    let canonical = canonical_query(&case.query);
    assert_eq!(
        canonical_query(&canonical),
        canonical,
        "canonical_query is not idempotent"
    );
    let resent = SignableRequest {
        query: &canonical,
        ..req
    };
    assert_eq!(
        sign(&req, &params).canonical_request(),
        sign(&resent, &params).canonical_request(),
        "signing the canonical query changes the canonical request"
    );
}

fn pieces(bytes: &[u8], table: &[&str]) -> String {
    bytes.iter().map(|b| pick(table, *b)).collect()
}

/// A value `http::HeaderValue` accepts and both signers normalize alike: printable ASCII and spaces.
fn header_value(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b % 96 {
            95 => ' ',
            c => char::from(0x20 + c),
        })
        .collect()
}

/// Whether every `%XX` escape and `+` of the query decodes to valid UTF-8 (what `aws-sigv4` needs
/// to read the query exactly).
fn query_decodes_to_utf8(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

fn shaped(case: &Shaped) {
    let method = pick(METHODS, case.method);
    let mut path = String::new();
    for segment in case.path.chunks(3) {
        path.push('/');
        match segment.first().map(|b| b % 8) {
            Some(0) => path.push('.'),
            Some(1) => path.push_str(".."),
            Some(2) => {}
            _ => path.push_str(&pieces(&segment[1..], PATH_PIECES)),
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    let query: Vec<String> = case
        .query
        .iter()
        .map(|(name, form, value)| {
            let name = pieces(name, QUERY_PIECES);
            match form % 3 {
                0 => name,
                1 => format!("{name}="),
                _ => format!("{name}={}", pieces(value, QUERY_PIECES)),
            }
        })
        .collect();
    let query = query.join("&");
    if !query_decodes_to_utf8(&query) {
        return;
    }
    let host = match case.host_port {
        Some(port) => format!("lambda.us-east-1.amazonaws.com:{}", port.max(1)),
        None => "example.amazonaws.com".to_owned(),
    };
    let mut headers = vec![("host".to_owned(), host.clone())];
    for (name, value) in &case.headers {
        headers.push((pick(HEADER_NAMES, *name).to_owned(), header_value(value)));
    }
    let precomputed = case.precomputed.map(|unsigned| {
        if unsigned {
            "UNSIGNED-PAYLOAD".to_owned()
        } else {
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned()
        }
    });
    let token: Option<String> = case.token.as_ref().map(|t| {
        let token = pieces(t, &["A", "B", "C", "x", "y", "z", "0", "9", "+", "/", "="]);
        if token.is_empty() {
            "T".to_owned()
        } else {
            token
        }
    });
    let region = pick(REGIONS, case.region);
    let service = pick(SERVICES, case.service);
    let time = time_from(
        946_684_800 + i64::from(case.time % 3_000_000_000),
        i32::from(case.offset) * 4,
    );
    let settings = settings_from(case.settings);

    let credentials = Credentials::new(AKID, SECRET, token.clone());
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = SignableRequest {
        method,
        path: &path,
        query: &query,
        headers: &header_refs,
        payload: match &precomputed {
            Some(hash) => Payload::Precomputed(hash),
            None => Payload::Bytes(&case.body),
        },
    };
    let params = SigningParams {
        credentials: &credentials,
        region,
        service,
        time,
        settings,
    };
    let mut ours: Vec<(String, String)> = sign_checked(&req, &params)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    ours.sort();

    let Some(mut theirs) = sign_with_aws_sigv4(
        method,
        &host,
        &path,
        &query,
        &headers,
        precomputed.as_deref(),
        &case.body,
        token,
        region,
        service,
        time,
        settings,
    ) else {
        return;
    };
    theirs.sort();
    assert_eq!(
        ours,
        theirs,
        "Moongate and aws-sigv4 disagree\ncanonical request:\n{}",
        sign(&req, &params).canonical_request()
    );
}

/// The approach of `src/aws/sigv4/tests.rs`: the same request through `aws-sigv4`. `None` when it
/// refuses the request.
#[allow(clippy::too_many_arguments)]
fn sign_with_aws_sigv4(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    precomputed: Option<&str>,
    body: &[u8],
    token: Option<String>,
    region: &str,
    service: &str,
    time: OffsetDateTime,
    ours: SigningSettings,
) -> Option<Vec<(String, String)>> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SessionTokenMode as TheirTokenMode, SignableBody,
        SignableRequest as TheirRequest, SigningSettings as TheirSettings,
        UriPathNormalizationMode,
    };
    let identity = aws_credential_types::Credentials::new(AKID, SECRET, token, None, "fuzz").into();
    let mut settings = TheirSettings::default();
    if !ours.double_uri_encode {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    if ours.payload_checksum_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if ours.session_token_mode == SessionTokenMode::Omit {
        settings.session_token_mode = TheirTokenMode::Exclude;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::from(time))
        .settings(settings)
        .build()
        .ok()?
        .into();
    let mut uri = format!("https://{host}{path}");
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    let body = match precomputed {
        Some(hash) => SignableBody::Precomputed(hash.to_owned()),
        None => SignableBody::Bytes(body),
    };
    let request = TheirRequest::new(
        method,
        uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body,
    )
    .ok()?;
    let output = aws_sigv4::http_request::sign(request, &params).ok()?;
    let (instructions, _signature) = output.into_parts();
    Some(
        instructions
            .headers()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect(),
    )
}

fuzz_target!(|case: Case| {
    match &case {
        Case::Raw(raw_case) => raw(raw_case),
        Case::Shaped(shaped_case) => shaped(shaped_case),
    }
});
