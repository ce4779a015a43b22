//! SigV4 signing cost for a typical Lambda Invoke (POST, 6 headers, 1 KiB body, session token),
//! against the `aws-sigv4` crate signing the same request in the same run.
//!
//! Run with `cargo bench --bench sigv4`. Besides criterion's report, it prints one summary line:
//! `sigv4 sign: <ns>/op warm cache, <ns>/op cold key, aws-sigv4 <ns>/op (<ratio>x)`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group};
use moongate::aws::sigv4::{
    Credentials, Payload, SignableRequest, SigningKeyCache, SigningParams, SigningSettings,
    canonical_query, sign,
};
use time::OffsetDateTime;

const PATH: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-function/invocations";
const QUERY: &str = "Qualifier=live";
const HEADERS: [(&str, &str); 6] = [
    ("host", "lambda.us-east-1.amazonaws.com"),
    ("content-type", "application/json"),
    ("content-length", "1024"),
    ("x-amz-invocation-type", "RequestResponse"),
    ("x-amz-log-type", "None"),
    ("x-amz-client-context", "eyJjdXN0b20iOnsiYSI6ImIifX0="),
];
const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

struct Fixture {
    credentials: Credentials,
    body: Vec<u8>,
    time: OffsetDateTime,
}

impl Fixture {
    fn new() -> Self {
        Self {
            credentials: Credentials::new(
                "ASIAEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                Some(TOKEN.to_owned()),
            ),
            body: (0..1024u32).map(|i| b'a' + (i % 26) as u8).collect(),
            time: OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid timestamp"),
        }
    }

    fn request(&self) -> SignableRequest<'_> {
        SignableRequest {
            method: "POST",
            path: PATH,
            query: QUERY,
            headers: &HEADERS,
            payload: Payload::Bytes(&self.body),
        }
    }

    fn params(&self) -> SigningParams<'_> {
        SigningParams {
            credentials: &self.credentials,
            region: "us-east-1",
            service: "lambda",
            time: self.time,
            settings: SigningSettings::default(),
        }
    }

    fn sign_with_aws_sigv4(&self) -> String {
        use aws_sigv4::http_request::{SignableBody, SignableRequest as TheirRequest};
        let identity = aws_credential_types::Credentials::new(
            self.credentials.access_key_id.clone(),
            self.credentials.secret_access_key.clone(),
            self.credentials.session_token.clone(),
            None,
            "bench",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("lambda")
            .time(SystemTime::from(self.time))
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .expect("aws-sigv4 params")
            .into();
        let uri = format!("https://lambda.us-east-1.amazonaws.com{PATH}?{QUERY}");
        let request = TheirRequest::new(
            "POST",
            uri,
            HEADERS.iter().copied(),
            SignableBody::Bytes(&self.body),
        )
        .expect("aws-sigv4 request");
        let output = aws_sigv4::http_request::sign(request, &params).expect("aws-sigv4 sign");
        output.signature().to_owned()
    }
}

fn bench_sign(c: &mut Criterion) {
    let fixture = Fixture::new();
    let req = fixture.request();
    let params = fixture.params();
    let mut cache = SigningKeyCache::new();
    assert_eq!(
        cache.sign(&req, &params).signature(),
        fixture.sign_with_aws_sigv4(),
        "both signers agree on the benchmarked request"
    );

    let mut group = c.benchmark_group("sigv4");
    group.bench_function("sign_warm_key_cache", |b| {
        b.iter(|| cache.sign(black_box(&req), black_box(&params)))
    });
    group.bench_function("sign_cold_key", |b| {
        b.iter(|| sign(black_box(&req), black_box(&params)))
    });
    group.bench_function("canonical_query", |b| {
        b.iter(|| canonical_query(black_box("b=2&a=x+y&Qualifier=%24LATEST&c")))
    });
    group.bench_function("aws_sigv4_crate", |b| {
        b.iter(|| black_box(&fixture).sign_with_aws_sigv4())
    });
    group.finish();
}

/// Mean nanoseconds per call of `f` over about half a second, after a warm-up.
fn ns_per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let mut calls = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..100 {
            f();
        }
        calls += 100;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn summary() {
    let fixture = Fixture::new();
    let req = fixture.request();
    let params = fixture.params();
    let mut cache = SigningKeyCache::new();
    let warm = ns_per_call(|| {
        black_box(cache.sign(black_box(&req), black_box(&params)));
    });
    let cold = ns_per_call(|| {
        black_box(sign(black_box(&req), black_box(&params)));
    });
    let peer = ns_per_call(|| {
        black_box(fixture.sign_with_aws_sigv4());
    });
    eprintln!(
        "sigv4 sign: {warm:.0} ns/op warm cache, {cold:.0} ns/op cold key, aws-sigv4 {peer:.0} ns/op ({:.1}x)",
        peer / warm
    );
}

criterion_group!(benches, bench_sign);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
