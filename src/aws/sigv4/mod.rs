//! AWS Signature Version 4 (header form) for the requests Moongate sends to AWS.
//!
//! The signer is pure: it sees a borrowed description of the request exactly as it will go on the
//! wire ([`SignableRequest`]) and returns the headers to add ([`SigningOutput`]). It never parses a
//! URI, never touches a socket and never fails: every input, including arbitrary bytes in the path,
//! query or headers, produces a signature (AWS decides whether it accepts it).
//!
//! Rules it follows (`shared/reference/aws.md` §2; the official suites are the tests):
//!
//! - **Canonical URI.** With [`SigningSettings::double_uri_encode`] (every service but S3) the wire
//!   path is normalized (dot segments removed, `//` collapsed, trailing `/` kept) and URI-encoded
//!   once more, so `%3A` on the wire is `%253A` in the canonical request. S3 mode takes the wire path
//!   verbatim.
//! - **Canonical query.** Pairs are split on `&` (empty pieces dropped) and on the first `=` (a bare
//!   `key` becomes `key=`), percent-decoded exactly once, strictly re-encoded (unreserved bytes kept,
//!   everything else `%XX` uppercase) and sorted by encoded name, then encoded value. A raw `+` is
//!   decoded as a space (`%20`), because that is how AWS reads a received `+`; a literal plus must be
//!   sent as `%2B`. A `%` not followed by two hex digits stays a literal `%` (`%25`). The canonical
//!   form is a fixed point, so callers send [`canonical_query`] of what they mean and the wire then
//!   carries exactly what was signed.
//! - **Headers.** Names are ASCII-lowercased; values are trimmed and every internal run of ASCII
//!   whitespace (space, tab, CR, LF, VT, FF) becomes one space, which also folds obs-fold
//!   continuation lines. Repeated names are joined with `,` in arrival order. `authorization` and
//!   `x-amz-date` from the input are never signed (the signer owns them), nor are
//!   `x-amz-security-token` when the credentials carry a token or the mode is
//!   [`SessionTokenMode::Omit`], or `x-amz-content-sha256` when the signer adds it: send the returned
//!   headers in place of any same-named ones.
//!
//! Performance: with a warm [`SigningKeyCache`] a sign builds the canonical request in one buffer,
//! sorts borrowed header references, allocates only for header names that are not already lowercase
//! and values that need whitespace folding, and reuses a pre-keyed HMAC state.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset};

#[cfg(test)]
mod tests;

type HmacSha256 = Hmac<Sha256>;

/// The SigV4 algorithm name, first word of the `Authorization` header and of the string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Lowercase hex SHA-256 of an empty payload.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEADER_DATE: &str = "x-amz-date";
const HEADER_TOKEN: &str = "x-amz-security-token";
const HEADER_CONTENT_SHA256: &str = "x-amz-content-sha256";
const HEADER_AUTHORIZATION: &str = "authorization";
/// Distinct (secret, date, region, service) keys kept by one [`SigningKeyCache`].
const KEY_CACHE_CAPACITY: usize = 4;

/// AWS credentials. `Debug` shows the access key id only; the secret and token are redacted.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id (`AKIA…` for long-term keys, `ASIA…` for temporary ones). Not secret.
    pub access_key_id: String,
    /// Secret access key. Never log it.
    pub secret_access_key: String,
    /// Session token of temporary credentials, sent as `x-amz-security-token`. Never log it.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Builds credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the session token of temporary credentials goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionTokenMode {
    /// Add `x-amz-security-token` before signing, so it is part of the signature. What Lambda,
    /// execute-api and the AWS SDKs use by default.
    Include,
    /// Add `x-amz-security-token` after signing; it is neither canonicalized nor signed.
    Omit,
}

/// Per-service signing switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningSettings {
    /// Normalize the wire path and URI-encode it a second time. `true` for every service except S3;
    /// `false` (S3) signs the wire path verbatim.
    pub double_uri_encode: bool,
    /// Add and sign `x-amz-content-sha256` with the payload hash (S3, CloudFront OAC).
    pub payload_checksum_header: bool,
    /// What to do with the session token, if the credentials have one.
    pub session_token_mode: SessionTokenMode,
}

impl Default for SigningSettings {
    /// Settings for Lambda and API Gateway: double encoding, no checksum header, token signed.
    fn default() -> Self {
        Self {
            double_uri_encode: true,
            payload_checksum_header: false,
            session_token_mode: SessionTokenMode::Include,
        }
    }
}

/// Who signs, for which scope, and when.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    /// The credentials to sign with.
    pub credentials: &'a Credentials,
    /// Scope region, the endpoint's region (`us-east-1`).
    pub region: &'a str,
    /// Scope service (`lambda` for Invoke and Function URLs, `execute-api` for API Gateway).
    pub service: &'a str,
    /// Signing time; converted to UTC. Take it from the clock when the request is sent.
    pub time: OffsetDateTime,
    /// Per-service switches.
    pub settings: SigningSettings,
}

/// The request body, or its precomputed hash.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// The exact bytes that will be sent; the signer hashes them.
    Bytes(&'a [u8]),
    /// A lowercase hex SHA-256 of the body computed by the caller (or a literal such as
    /// `UNSIGNED-PAYLOAD` for services that accept it), used verbatim.
    Precomputed(&'a str),
}

impl fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Payload::Precomputed(hash) => f.debug_tuple("Precomputed").field(hash).finish(),
        }
    }
}

/// A request to sign, borrowed and exactly as it will be sent.
///
/// `Debug` shows header names only, since callers may pass sensitive headers.
#[derive(Clone, Copy)]
pub struct SignableRequest<'a> {
    /// HTTP method, as sent (`POST`).
    pub method: &'a str,
    /// Path as sent on the wire, already percent-encoded, without the query (`/a%3Ab/c`).
    pub path: &'a str,
    /// Raw query as sent, without the `?`; empty when there is none. Send
    /// [`canonical_query`]`(query)` so that the wire carries exactly what is signed.
    pub query: &'a str,
    /// Headers to sign, `host` included (with `:port` when not the default). Send exactly these,
    /// plus the ones in [`SigningOutput::headers`].
    pub headers: &'a [(&'a str, &'a str)],
    /// The body, or its hash.
    pub payload: Payload<'a>,
}

impl fmt::Debug for SignableRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("SignableRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &names)
            .field("payload", &self.payload)
            .finish()
    }
}

/// The result of signing: the headers to add, and the intermediate strings for tests and debugging.
///
/// `Debug` shows header names and `SignedHeaders` only; the canonical request contains the session
/// token in [`SessionTokenMode::Include`] mode, so do not log it.
pub struct SigningOutput {
    headers: Vec<(&'static str, String)>,
    canonical_request: String,
    signed_headers: Range<usize>,
    string_to_sign: String,
}

impl SigningOutput {
    /// Headers to add to the request, lowercase names, in this order: `x-amz-date`,
    /// `x-amz-security-token` (credentials with a token, either mode), `x-amz-content-sha256`
    /// (when [`SigningSettings::payload_checksum_header`]), `authorization`.
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// The headers to add, by value.
    pub fn into_headers(self) -> Vec<(&'static str, String)> {
        self.headers
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> &str {
        self.headers
            .last()
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    }

    /// The signature: 64 lowercase hex characters.
    pub fn signature(&self) -> &str {
        let authorization = self.authorization();
        authorization
            .get(authorization.len().saturating_sub(64)..)
            .unwrap_or_default()
    }

    /// The canonical request that was hashed.
    pub fn canonical_request(&self) -> &str {
        &self.canonical_request
    }

    /// The `SignedHeaders` list (`host;x-amz-date`).
    pub fn signed_headers(&self) -> &str {
        self.canonical_request
            .get(self.signed_headers.clone())
            .unwrap_or_default()
    }

    /// The string to sign.
    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }
}

impl fmt::Debug for SigningOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("SigningOutput")
            .field("headers", &names)
            .field("signed_headers", &self.signed_headers())
            .finish_non_exhaustive()
    }
}

/// Signs `req`, deriving the signing key from scratch (four HMACs). On a hot path use
/// [`SigningKeyCache::sign`], which derives the key once per (secret, day, region, service).
pub fn sign(req: &SignableRequest<'_>, params: &SigningParams<'_>) -> SigningOutput {
    let date = AmzDate::new(params.time);
    let key = signing_mac(
        &params.credentials.secret_access_key,
        date.day(),
        params.region,
        params.service,
    );
    sign_with_key(req, params, &date, &key)
}

/// Signing keys derived per (secret, date, region, service), kept as pre-keyed HMAC states.
///
/// Holds at most a handful of keys and replaces the oldest, so a key for yesterday's date is
/// evicted naturally. It is plain data with no interior mutability: keep one per worker thread
/// (for example in a `thread_local!` `RefCell`) and no lock is involved. It keeps a copy of each
/// secret to recognise it; `Debug` shows the number of keys only.
#[derive(Clone, Default)]
pub struct SigningKeyCache {
    keys: Vec<CachedKey>,
    next_replaced: usize,
}

#[derive(Clone)]
struct CachedKey {
    secret: String,
    day: [u8; 8],
    region: String,
    service: String,
    mac: HmacSha256,
}

impl SigningKeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signs `req` like [`sign`], reusing a cached signing key when there is one.
    pub fn sign(&mut self, req: &SignableRequest<'_>, params: &SigningParams<'_>) -> SigningOutput {
        let date = AmzDate::new(params.time);
        let key = self.key(
            &params.credentials.secret_access_key,
            date.day_bytes(),
            params.region,
            params.service,
        );
        sign_with_key(req, params, &date, key)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Drops every key, for example after credentials are rotated.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.next_replaced = 0;
    }

    fn key(&mut self, secret: &str, day: [u8; 8], region: &str, service: &str) -> &HmacSha256 {
        let found = self.keys.iter().position(|key| {
            key.day == day && key.region == region && key.service == service && key.secret == secret
        });
        let index = match found {
            Some(index) => index,
            None => {
                let entry = CachedKey {
                    secret: secret.to_owned(),
                    day,
                    region: region.to_owned(),
                    service: service.to_owned(),
                    mac: signing_mac(secret, ascii_str(&day), region, service),
                };
                if self.keys.len() < KEY_CACHE_CAPACITY {
                    self.keys.push(entry);
                    self.keys.len() - 1
                } else {
                    let index = self.next_replaced % KEY_CACHE_CAPACITY;
                    self.keys[index] = entry;
                    self.next_replaced = (index + 1) % KEY_CACHE_CAPACITY;
                    index
                }
            }
        };
        &self.keys[index].mac
    }
}

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The canonical query string of a raw query (without `?`): decoded once (`+` is a space), strictly
/// re-encoded, sorted by name then value, bare keys as `key=`. Idempotent; send its result.
pub fn canonical_query(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + raw.len() / 4);
    write_canonical_query(raw, &mut out);
    out
}

/// The canonical URI of a wire path (without query) under `settings`: normalized and encoded again
/// when [`SigningSettings::double_uri_encode`], verbatim otherwise; an empty path is `/`.
pub fn canonical_uri(path: &str, settings: &SigningSettings) -> String {
    let mut out = String::with_capacity(path.len() + path.len() / 2 + 1);
    write_canonical_uri(path, settings.double_uri_encode, &mut out);
    out
}

/// SigV4 `UriEncode`: keeps `A-Z a-z 0-9 - . _ ~` (and `/` unless `encode_slash`), turns every other
/// UTF-8 byte into `%XX` with uppercase hex. Space is `%20`.
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    encode_str(input, !encode_slash, &mut out);
    out
}

/// `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`), ASCII. Years outside 0..=9999 are clamped: such a clock is
/// broken and AWS rejects the request as expired, which is the useful outcome.
struct AmzDate([u8; 16]);

impl AmzDate {
    fn new(time: OffsetDateTime) -> Self {
        let utc = time.checked_to_offset(UtcOffset::UTC).unwrap_or(time);
        let year = utc.year().clamp(0, 9999).unsigned_abs();
        let mut out = [0u8; 16];
        write_digits(&mut out[0..4], year);
        write_digits(&mut out[4..6], u32::from(u8::from(utc.month())));
        write_digits(&mut out[6..8], u32::from(utc.day()));
        out[8] = b'T';
        write_digits(&mut out[9..11], u32::from(utc.hour()));
        write_digits(&mut out[11..13], u32::from(utc.minute()));
        write_digits(&mut out[13..15], u32::from(utc.second()));
        out[15] = b'Z';
        Self(out)
    }

    fn as_str(&self) -> &str {
        ascii_str(&self.0)
    }

    fn day(&self) -> &str {
        ascii_str(&self.0[..8])
    }

    fn day_bytes(&self) -> [u8; 8] {
        let mut day = [0u8; 8];
        day.copy_from_slice(&self.0[..8]);
        day
    }
}

fn write_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        // `value % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Views bytes the signer produced itself (digits, hex, `%XX`) as `str`.
fn ascii_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn keyed_mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// `kSigning` = HMAC chain over "AWS4" + secret, day, region, service, "aws4_request".
fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> [u8; 32] {
    let mut seed = Vec::with_capacity(4 + secret.len());
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.as_bytes());
    let k_date = hmac(&seed, day.as_bytes());
    seed.fill(0);
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn signing_mac(secret: &str, day: &str, region: &str, service: &str) -> HmacSha256 {
    keyed_mac(&signing_key(secret, day, region, service))
}

fn sign_with_key(
    req: &SignableRequest<'_>,
    params: &SigningParams<'_>,
    date: &AmzDate,
    key: &HmacSha256,
) -> SigningOutput {
    let settings = params.settings;
    let token = params.credentials.session_token.as_deref();
    let token_signed = token.filter(|_| settings.session_token_mode == SessionTokenMode::Include);

    let mut payload_hex = [0u8; 64];
    let payload_hash = match req.payload {
        Payload::Bytes(bytes) => hex_lower(&Sha256::digest(bytes), &mut payload_hex),
        Payload::Precomputed(hash) => hash,
    };

    // The headers to sign: the caller's, minus those the signer owns, plus the signer's own. Sorted
    // by name with a stable sort, so repeated names keep their arrival order for the `,` join.
    let mut headers: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(req.headers.len() + 3);
    for &(name, value) in req.headers {
        let name = ascii_lowercase(name);
        if !signer_owns(&name, token.is_some(), settings) {
            headers.push((name, normalize_value(value)));
        }
    }
    headers.push((Cow::Borrowed(HEADER_DATE), Cow::Borrowed(date.as_str())));
    if let Some(token) = token_signed {
        headers.push((Cow::Borrowed(HEADER_TOKEN), normalize_value(token)));
    }
    if settings.payload_checksum_header {
        headers.push((
            Cow::Borrowed(HEADER_CONTENT_SHA256),
            Cow::Borrowed(payload_hash),
        ));
    }
    headers.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let header_bytes: usize = headers.iter().map(|(n, v)| 2 * n.len() + v.len() + 2).sum();
    let mut creq = String::with_capacity(
        req.method.len() + 2 * req.path.len() + 2 * req.query.len() + header_bytes + 80,
    );
    creq.push_str(req.method);
    creq.push('\n');
    write_canonical_uri(req.path, settings.double_uri_encode, &mut creq);
    creq.push('\n');
    write_canonical_query(req.query, &mut creq);
    creq.push('\n');
    let mut previous: Option<&str> = None;
    for (name, value) in &headers {
        if previous == Some(name.as_ref()) {
            creq.push(',');
        } else {
            if previous.is_some() {
                creq.push('\n');
            }
            creq.push_str(name);
            creq.push(':');
        }
        creq.push_str(value);
        previous = Some(name);
    }
    if previous.is_some() {
        creq.push('\n');
    }
    creq.push('\n');
    let signed_start = creq.len();
    let mut previous: Option<&str> = None;
    for (name, _) in &headers {
        if previous == Some(name.as_ref()) {
            continue;
        }
        if previous.is_some() {
            creq.push(';');
        }
        creq.push_str(name);
        previous = Some(name);
    }
    let signed_headers = signed_start..creq.len();
    creq.push('\n');
    creq.push_str(payload_hash);
    drop(headers);

    let mut creq_hex = [0u8; 64];
    let creq_hash = hex_lower(&Sha256::digest(creq.as_bytes()), &mut creq_hex);

    let mut sts = String::with_capacity(
        ALGORITHM.len() + 16 + 8 + params.region.len() + params.service.len() + 64 + 20,
    );
    sts.push_str(ALGORITHM);
    sts.push('\n');
    sts.push_str(date.as_str());
    sts.push('\n');
    let scope_start = sts.len();
    sts.push_str(date.day());
    sts.push('/');
    sts.push_str(params.region);
    sts.push('/');
    sts.push_str(params.service);
    sts.push_str("/aws4_request");
    let scope = scope_start..sts.len();
    sts.push('\n');
    sts.push_str(creq_hash);

    let mut mac = key.clone();
    mac.update(sts.as_bytes());
    let mut signature_hex = [0u8; 64];
    let signature = hex_lower(&mac.finalize().into_bytes(), &mut signature_hex);

    let access_key_id = &params.credentials.access_key_id;
    let signed = creq.get(signed_headers.clone()).unwrap_or_default();
    let scope = sts.get(scope).unwrap_or_default();
    let mut authorization = String::with_capacity(
        ALGORITHM.len() + access_key_id.len() + scope.len() + signed.len() + 64 + 40,
    );
    authorization.push_str(ALGORITHM);
    authorization.push_str(" Credential=");
    authorization.push_str(access_key_id);
    authorization.push('/');
    authorization.push_str(scope);
    authorization.push_str(", SignedHeaders=");
    authorization.push_str(signed);
    authorization.push_str(", Signature=");
    authorization.push_str(signature);

    let mut out = Vec::with_capacity(4);
    out.push((HEADER_DATE, date.as_str().to_owned()));
    if let Some(token) = token {
        out.push((HEADER_TOKEN, token.to_owned()));
    }
    if settings.payload_checksum_header {
        out.push((HEADER_CONTENT_SHA256, payload_hash.to_owned()));
    }
    out.push((HEADER_AUTHORIZATION, authorization));

    SigningOutput {
        headers: out,
        canonical_request: creq,
        signed_headers,
        string_to_sign: sts,
    }
}

/// Whether an input header (lowercased name) is replaced by the signer rather than signed.
fn signer_owns(name: &str, has_token: bool, settings: SigningSettings) -> bool {
    match name {
        HEADER_AUTHORIZATION | HEADER_DATE => true,
        HEADER_TOKEN => has_token || settings.session_token_mode == SessionTokenMode::Omit,
        HEADER_CONTENT_SHA256 => settings.payload_checksum_header,
        _ => false,
    }
}

fn hex_lower<'b>(bytes: &[u8], out: &'b mut [u8; 64]) -> &'b str {
    const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_LOWER[usize::from(byte >> 4)];
        pair[1] = HEX_LOWER[usize::from(byte & 0x0f)];
    }
    ascii_str(&out[..(2 * bytes.len()).min(64)])
}

fn ascii_lowercase(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// SP, HTAB, LF, VT, FF, CR: the whitespace botocore and the Java SDK fold in header values.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Trims a header value and folds every internal whitespace run into one space.
fn normalize_value(value: &str) -> Cow<'_, str> {
    // Fast path, one cheap test per byte: values that are already canonical (no leading, trailing
    // or repeated space and no other whitespace) are borrowed as they are. Any byte up to the
    // space takes the slow path, which keeps the control bytes that are not whitespace.
    let mut previous_space = true;
    let mut clean = true;
    for &b in value.as_bytes() {
        if b <= b' ' {
            if b != b' ' || previous_space {
                clean = false;
                break;
            }
            previous_space = true;
        } else {
            previous_space = false;
        }
    }
    if clean && !previous_space {
        return Cow::Borrowed(value);
    }
    let trimmed = value.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
    let mut out = String::with_capacity(trimmed.len());
    let mut pending_space = false;
    for c in trimmed.chars() {
        if c.is_ascii() && is_space(c as u8) {
            pending_space = true;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    if out == trimmed {
        // Only control bytes that are not whitespace sent us here: nothing changed.
        return Cow::Borrowed(trimmed);
    }
    Cow::Owned(out)
}

/// `A-Z a-z 0-9 - . _ ~`, as a table: the encoders test every byte of the path and query.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

fn push_encoded_byte(b: u8, out: &mut String) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
}

/// Appends `UriEncode(input)`, copying runs of safe bytes in one go.
fn encode_str(input: &str, keep_slash: bool, out: &mut String) {
    let bytes = input.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            continue;
        }
        // Safe bytes are ASCII, so a run always starts and ends on a char boundary.
        out.push_str(input.get(run_start..i).unwrap_or_default());
        push_encoded_byte(b, out);
        run_start = i + 1;
    }
    out.push_str(input.get(run_start..).unwrap_or_default());
}

fn write_canonical_uri(path: &str, double_uri_encode: bool, out: &mut String) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    if !double_uri_encode {
        out.push_str(path);
        return;
    }
    if !needs_normalization(path) {
        encode_str(path, true, out);
        return;
    }
    // RFC 3986 remove_dot_segments, with empty segments dropped as well (`//` collapses).
    let mut segments: Vec<&str> = Vec::with_capacity(path.len() / 4 + 1);
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    out.push('/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_str(segment, true, out);
    }
    // `/a/b/`, `/a/b/.` and `/a/b/..` all name a directory: keep (or gain) the trailing slash.
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if trailing && !segments.is_empty() {
        out.push('/');
    }
}

/// Whether normalization would change `path`: not absolute, an empty segment before the end, or a
/// `.`/`..` segment.
fn needs_normalization(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return true;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return true;
        }
    }
    false
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends the strict encoding of `component` decoded once (`+` → space, `%XX` → byte).
fn decode_encode_component(component: &str, out: &mut String) {
    let bytes = component.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let decoded = match b {
            b'+' => b' ',
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => {
                        i += 2;
                        (high << 4) | low
                    }
                    _ => b'%',
                }
            }
            other => other,
        };
        i += 1;
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            push_encoded_byte(decoded, out);
        }
    }
}

fn write_canonical_query(raw: &str, out: &mut String) {
    if raw.is_empty() {
        return;
    }
    // All encoded names and values live in one scratch string; pairs are index ranges into it.
    let mut scratch = String::with_capacity(raw.len() + raw.len() / 2 + 8);
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(8);
    for part in raw.split('&').filter(|part| !part.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name_start = scratch.len();
        decode_encode_component(name, &mut scratch);
        let value_start = scratch.len();
        decode_encode_component(value, &mut scratch);
        pairs.push((name_start..value_start, value_start..scratch.len()));
    }
    let text = |range: &Range<usize>| scratch.get(range.clone()).unwrap_or_default();
    pairs.sort_unstable_by(|a, b| {
        text(&a.0)
            .cmp(text(&b.0))
            .then_with(|| text(&a.1).cmp(text(&b.1)))
    });
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(text(name));
        out.push('=');
        out.push_str(text(value));
    }
}
