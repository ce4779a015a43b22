//! An independent SigV4 check for the AWS stand-ins: the received request is signed again with the
//! `aws-sigv4` crate (the AWS SDK's signer) and the signatures are compared, as AWS would.

use std::time::{Duration, SystemTime};

/// What AWS answers when the signature does not match.
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Credentials and scope a stand-in verifies against.
#[derive(Clone)]
pub struct Iam {
    pub access: &'static str,
    pub secret: &'static str,
    pub token: Option<&'static str>,
    pub region: &'static str,
    pub service: &'static str,
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| value.get(range)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(SystemTime::from(
        time::PrimitiveDateTime::new(date, clock).assume_utc(),
    ))
}

/// Re-signs the received request with the `aws-sigv4` crate (the AWS SDK's signer) and compares.
pub fn verify_sigv4(
    iam: &Iam,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let missing = || {
        (
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".to_owned(),
        )
    };
    let authorization = header("authorization").ok_or_else(missing)?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(missing)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(", ") {
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let incomplete = || {
        (
            "IncompleteSignatureException",
            format!(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature': {authorization}"
            ),
        )
    };
    let (credential, signed, signature) = match (credential, signed, signature) {
        (Some(c), Some(s), Some(g)) => (c, s, g),
        _ => return Err(incomplete()),
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access, day, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete());
    };
    if access != iam.access {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ));
    }
    if service != iam.service {
        return Err((
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: '{}'. ",
                iam.service
            ),
        ));
    }
    if region != iam.region {
        return Err((
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{region}'. "),
        ));
    }
    let amz_date = header("x-amz-date").unwrap_or_default();
    let time = parse_amz_date(amz_date).ok_or_else(|| {
        (
            "IncompleteSignatureException",
            format!("bad X-Amz-Date {amz_date:?}"),
        )
    })?;
    if !amz_date.starts_with(day) {
        return Err((
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP".to_owned(),
        ));
    }
    let skew = SystemTime::now()
        .duration_since(time)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > Duration::from_secs(300) {
        return Err((
            "InvalidSignatureException",
            format!("Signature expired: {amz_date}"),
        ));
    }
    let sent_token = header("x-amz-security-token");
    if sent_token != iam.token {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ));
    }
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in signed.split(';') {
        if name == "x-amz-date" || name == "x-amz-security-token" {
            continue;
        }
        let mut any = false;
        for value in parts.headers.get_all(name) {
            any = true;
            headers.push((name, value.to_str().unwrap_or_default()));
        }
        if !any {
            return Err((
                "InvalidSignatureException",
                format!("signed header {name} was not sent"),
            ));
        }
    }
    let host = header("host").unwrap_or_default();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = format!("http://{host}{path_and_query}");

    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(
        iam.access,
        iam.secret,
        iam.token.map(str::to_owned),
        None,
        "mock-function",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(iam.region)
        .name(iam.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let request = SignableRequest::new(
        parts.method.as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| {
        (
            "InvalidSignatureException",
            format!("unsignable request: {e}"),
        )
    })?;
    let expected = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| ("InvalidSignatureException", format!("signing failed: {e}")))?
        .signature()
        .to_owned();
    if expected != signature {
        return Err(("InvalidSignatureException", SIGNATURE_MISMATCH.to_owned()));
    }
    Ok(())
}
