//! Tests for the SigV4 signer: both official suites, focused rules, and a differential check
//! against the `aws-sigv4` crate.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigv4-vectors")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Expected files sometimes end with one newline; the content never does.
fn expected(path: &Path) -> String {
    let text = read(path);
    text.strip_suffix('\n').map(str::to_owned).unwrap_or(text)
}

/// `20150830T123600Z` or `2015-08-30T12:36:00Z`, as UTC.
fn parse_time(text: &str) -> OffsetDateTime {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    assert_eq!(digits.len(), 14, "timestamp {text:?}");
    let number = |range: std::ops::Range<usize>| digits[range].iter().fold(0, |n, d| n * 10 + d);
    let month = Month::try_from(number(4..6) as u8).expect("month");
    let date =
        Date::from_calendar_date(number(0..4) as i32, month, number(6..8) as u8).expect("date");
    let time = Time::from_hms(
        number(8..10) as u8,
        number(10..12) as u8,
        number(12..14) as u8,
    )
    .expect("time");
    PrimitiveDateTime::new(date, time).assume_utc()
}

/// A request file of either suite: request line, `Name:value` headers (obs-fold continuation
/// lines are appended to the previous value with their line break, for the signer to fold), a
/// blank line, then the body.
struct RequestFile {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RequestFile {
    fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let (method, rest) = request_line.split_once(' ').expect("method");
        // The target may contain raw spaces (`/example space/`): the version is after the last one.
        // One signed request (`double-url-encode`) has no version.
        let target = match rest.rsplit_once(' ') {
            Some((target, version)) if version.starts_with("HTTP/") => target,
            _ => rest,
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines.filter(|line| !line.is_empty()) {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("continuation after a header");
                last.1.push('\n');
                last.1.push_str(line);
                continue;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Signs a parsed request file and returns the output.
fn sign_file(
    req: &RequestFile,
    path: &str,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: OffsetDateTime,
    settings: SigningSettings,
) -> SigningOutput {
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let signable = SignableRequest {
        method: &req.method,
        path,
        query: &req.query,
        headers: &headers,
        payload: Payload::Bytes(&req.body),
    };
    let params = SigningParams {
        credentials,
        region,
        service,
        time,
        settings,
    };
    let uncached = sign(&signable, &params);
    let cached = SigningKeyCache::new().sign(&signable, &params);
    assert_eq!(uncached.authorization(), cached.authorization());
    uncached
}

fn check(failures: &mut Vec<String>, case: &str, what: &str, got: &str, want: &str) {
    if got != want {
        failures.push(format!("{case}: {what}\n--- got\n{got}\n--- want\n{want}"));
    }
}

/// Every header the signer returns is in the expected signed request, same value.
fn check_signed_request(failures: &mut Vec<String>, case: &str, out: &SigningOutput, sreq: &str) {
    let sreq = RequestFile::parse(sreq);
    for (name, value) in out.headers() {
        let found = sreq
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value);
        if !found {
            failures.push(format!("{case}: signed request lacks {name}: {value}"));
        }
    }
}

fn find_case_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read suite dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_dir())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.join(format!("{name}.req")).is_file() {
            out.push(path);
        } else {
            find_case_dirs(&path, out);
        }
    }
}

#[test]
fn classic_suite_matches_every_case() {
    let mut dirs = Vec::new();
    find_case_dirs(&vectors_dir().join("aws4_testsuite"), &mut dirs);
    assert_eq!(dirs.len(), 34, "aws4_testsuite case count");

    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in &dirs {
        let case = dir.file_name().and_then(|n| n.to_str()).expect("case name");
        let file = |ext: &str| dir.join(format!("{case}.{ext}"));
        let req = RequestFile::parse(&read(&file("req")));
        let time = parse_time(req.header("x-amz-date").expect("X-Amz-Date in .req"));
        let sreq = read(&file("sreq"));
        let creq = expected(&file("creq"));

        let mut settings = SigningSettings::default();
        let token = match case {
            // The token is not in the .req; the signer adds it and signs it (see the .creq).
            "get-vanilla-with-session-token" => creq
                .lines()
                .find_map(|line| line.strip_prefix("x-amz-security-token:"))
                .map(str::to_owned),
            // The .req already carries the token; the signer replaces it with its own.
            "post-sts-header-before" => req.header("x-amz-security-token").map(str::to_owned),
            // Added after signing: the .sreq has it, the canonical request does not.
            "post-sts-header-after" => {
                settings.session_token_mode = SessionTokenMode::Omit;
                RequestFile::parse(&sreq)
                    .header("x-amz-security-token")
                    .map(str::to_owned)
            }
            _ => None,
        };
        if case.contains("session-token") || case.starts_with("post-sts") {
            assert!(token.is_some(), "{case}: token found");
        }
        let credentials = Credentials::new(AKID, SECRET, token);
        let out = sign_file(
            &req,
            &req.path,
            &credentials,
            "us-east-1",
            "service",
            time,
            settings,
        );

        check(
            &mut failures,
            case,
            "canonical request",
            out.canonical_request(),
            &creq,
        );
        check(
            &mut failures,
            case,
            "string to sign",
            out.string_to_sign(),
            &expected(&file("sts")),
        );
        check(
            &mut failures,
            case,
            "authorization",
            out.authorization(),
            &expected(&file("authz")),
        );
        // Upstream quirk: this .sreq carries get-vanilla's signature; the .authz above is right.
        if case != "get-vanilla-with-session-token" {
            check_signed_request(&mut failures, case, &out, &sreq);
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(checked, 34);
}

/// The CRT cases that model S3 (`normalize: false`): they run in S3 mode
/// (`double_uri_encode: false`, wire path verbatim). aws.md speaks of six; the suite has seven.
const CRT_S3_MODE: [&str; 7] = [
    "get-relative-relative-unnormalized",
    "get-relative-unnormalized",
    "get-slash-dot-slash-unnormalized",
    "get-slash-pointless-dot-unnormalized",
    "get-slash-unnormalized",
    "get-slashes-unnormalized",
    "get-space-unnormalized",
];

/// Header-mode expectations of every CRT case. Presigned (`query-*`) expectations are not
/// checked: the signer has no presigned-URL mode.
#[test]
fn crt_suite_matches_every_case() {
    let suite = vectors_dir().join("aws-signing-test-suite/v4");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&suite)
        .expect("read CRT suite")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 40, "CRT case count");

    let mut failures = Vec::new();
    let (mut checked, mut s3_mode, mut canonical_only) = (0, 0, 0);
    for dir in &dirs {
        let case = dir.file_name().and_then(|n| n.to_str()).expect("case name");
        let req = RequestFile::parse(&read(&dir.join("request.txt")));
        let (credentials, region, service, time, settings) = match case {
            // Legacy cases without context.json (aws.md §3.4).
            "double-url-encode" => (
                Credentials::new(AKID, SECRET, None),
                "us-east-2".to_owned(),
                "lambda".to_owned(),
                parse_time("20210511T154045Z"),
                SigningSettings::default(),
            ),
            "double-encode-path" => (
                Credentials::new(AKID, SECRET, None),
                "us-east-1".to_owned(),
                "execute-api".to_owned(),
                parse_time("20210511T154045Z"),
                SigningSettings::default(),
            ),
            _ => {
                let context: serde_json::Value =
                    serde_json::from_str(&read(&dir.join("context.json"))).expect("context.json");
                let text = |v: &serde_json::Value| v.as_str().expect("string").to_owned();
                let flag = |key: &str| context[key].as_bool().unwrap_or(false);
                let creds = &context["credentials"];
                let credentials = Credentials::new(
                    text(&creds["access_key_id"]),
                    text(&creds["secret_access_key"]),
                    creds["token"].as_str().map(str::to_owned),
                );
                let settings = SigningSettings {
                    double_uri_encode: flag("normalize"),
                    payload_checksum_header: flag("sign_body"),
                    session_token_mode: if flag("omit_session_token") {
                        SessionTokenMode::Omit
                    } else {
                        SessionTokenMode::Include
                    },
                };
                assert_eq!(
                    !settings.double_uri_encode,
                    CRT_S3_MODE.contains(&case),
                    "{case}: only the listed cases are S3 mode"
                );
                if !settings.double_uri_encode {
                    s3_mode += 1;
                }
                (
                    credentials,
                    text(&context["region"]),
                    text(&context["service"]),
                    parse_time(&text(&context["timestamp"])),
                    settings,
                )
            }
        };
        let path = match case {
            // smithy-rs rewrote this input to `/example%20space/` but kept the expected output of
            // the raw `/example space/`, which its signed request still shows (aws.md §3.4).
            "get-space-normalized" => "/example space/",
            // The S3 twin keeps a raw space that its expected output encodes once; S3 mode signs
            // the wire path verbatim, and on the wire that space is `%20`.
            "get-space-unnormalized" => "/example%20space/",
            _ => req.path.as_str(),
        };
        let out = sign_file(&req, path, &credentials, &region, &service, time, settings);

        let creq = expected(&dir.join("header-canonical-request.txt"));
        check(
            &mut failures,
            case,
            "canonical request",
            out.canonical_request(),
            &creq,
        );
        if case == "double-encode-path" {
            // Only its canonical request is consistent (aws.md §3.4).
            canonical_only += 1;
            checked += 1;
            continue;
        }
        let sts = expected(&dir.join("header-string-to-sign.txt"));
        check(
            &mut failures,
            case,
            "string to sign",
            out.string_to_sign(),
            &sts,
        );
        let sreq = read(&dir.join("header-signed-request.txt"));
        let signature = match std::fs::read_to_string(dir.join("header-signature.txt")) {
            Ok(signature) => signature.trim_end().to_owned(),
            Err(_) => {
                let (_, tail) = sreq
                    .split_once("Signature=")
                    .expect("signature in signed request");
                tail.chars().take_while(char::is_ascii_hexdigit).collect()
            }
        };
        check(
            &mut failures,
            case,
            "signature",
            out.signature(),
            &signature,
        );
        check_signed_request(&mut failures, case, &out, &sreq);
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!((checked, canonical_only, s3_mode), (40, 1, 7));
}

#[test]
fn signing_key_matches_the_documented_intermediate_values() {
    let cases = [
        (
            "20150830",
            "us-east-1",
            "service",
            "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75",
        ),
        (
            "20210511",
            "us-east-2",
            "lambda",
            "e4f8e516d9b28d24d4fb695026b11b3abf389634eefb422124fc20eb29ad1bff",
        ),
        (
            "20150830",
            "us-east-1",
            "iam",
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9",
        ),
    ];
    for (day, region, service, want) in cases {
        assert_eq!(hex::encode(signing_key(SECRET, day, region, service)), want);
    }
}

#[test]
fn bare_query_key_canonicalizes_to_key_equals() {
    assert_eq!(canonical_query("key"), "key=");
    assert_eq!(canonical_query("b&a=1"), "a=1&b=");
    assert_eq!(canonical_query("key="), "key=");
}

#[test]
fn raw_plus_in_query_is_a_space_and_encoded_plus_is_a_plus() {
    assert_eq!(canonical_query("q=x+y"), "q=x%20y");
    assert_eq!(canonical_query("q=x%2By"), "q=x%2By");
    assert_eq!(canonical_query("q=1%2b1"), "q=1%2B1");
    assert_eq!(canonical_query("a+b=c"), "a%20b=c");
}

#[test]
fn query_is_decoded_once_and_strictly_reencoded() {
    assert_eq!(canonical_query("a=b=c"), "a=b%3Dc");
    assert_eq!(canonical_query("p=a/b"), "p=a%2Fb");
    assert_eq!(canonical_query("p=%252F"), "p=%252F");
    assert_eq!(canonical_query("sp=a%20b"), "sp=a%20b");
    assert_eq!(canonical_query("u=%e1%88%b4"), "u=%E1%88%B4");
    assert_eq!(canonical_query("t=~-._"), "t=~-._");
    assert_eq!(canonical_query("x=%zz&y=%&z=%4"), "x=%25zz&y=%25&z=%254");
    assert_eq!(canonical_query("a=1&&b=2&"), "a=1&b=2");
    assert_eq!(canonical_query(""), "");
}

#[test]
fn query_sorts_by_encoded_name_then_value() {
    assert_eq!(canonical_query("b=2&a=2&a=1"), "a=1&a=2&b=2");
    assert_eq!(canonical_query("a-b=1&a=2"), "a=2&a-b=1");
    assert_eq!(
        canonical_query("Param1=value2&Param1=Value1"),
        "Param1=Value1&Param1=value2"
    );
    assert_eq!(canonical_query("%C3%A9=1&~=2"), "%C3%A9=1&~=2");
}

#[test]
fn canonical_query_is_a_fixed_point() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let raw: String = (0..rng.usize(0..24))
            .map(|_| {
                *rng.choice(b"aZ09-._~+=&/%2Bfz ?\xc3".iter())
                    .expect("alphabet") as char
            })
            .collect();
        let once = canonical_query(&raw);
        assert_eq!(canonical_query(&once), once, "raw {raw:?}");
    }
}

#[test]
fn canonical_uri_double_encodes_and_normalizes() {
    let lambda = SigningSettings::default();
    let cases = [
        (
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A1%3Afunction%3Af/invocations",
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A1%253Afunction%253Af/invocations",
        ),
        ("/test/@connections/a%3D", "/test/%40connections/a%253D"),
        ("", "/"),
        ("/", "/"),
        ("//example//", "/example/"),
        ("/example1/example2/../..", "/"),
        ("/./", "/"),
        ("/./example", "/example"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/../a", "/a"),
        ("a/b", "/a/b"),
        ("/a/.../b", "/a/.../b"),
        ("/example space/", "/example%20space/"),
        ("/ሴ", "/%E1%88%B4"),
        ("/example/$delete", "/example/%24delete"),
        ("/a+b:c", "/a%2Bb%3Ac"),
    ];
    for (path, want) in cases {
        assert_eq!(canonical_uri(path, &lambda), want, "path {path:?}");
    }
    let s3 = SigningSettings {
        double_uri_encode: false,
        ..lambda
    };
    assert_eq!(
        canonical_uri("/my-object//example//photo.user", &s3),
        "/my-object//example//photo.user"
    );
    assert_eq!(canonical_uri("", &s3), "/");
}

#[test]
fn uri_encode_follows_sigv4_rules() {
    assert_eq!(uri_encode("a b/c~d", false), "a%20b/c~d");
    assert_eq!(uri_encode("a b/c~d", true), "a%20b%2Fc~d");
    assert_eq!(uri_encode("é+=", true), "%C3%A9%2B%3D");
}

fn simple_request<'a>(headers: &'a [(&'a str, &'a str)]) -> SignableRequest<'a> {
    SignableRequest {
        method: "GET",
        path: "/",
        query: "",
        headers,
        payload: Payload::Bytes(b""),
    }
}

fn vector_params(credentials: &Credentials) -> SigningParams<'_> {
    SigningParams {
        credentials,
        region: "us-east-1",
        service: "service",
        time: parse_time("20150830T123600Z"),
        settings: SigningSettings::default(),
    }
}

fn canonical_header_lines(out: &SigningOutput) -> Vec<&str> {
    let creq = out.canonical_request();
    creq.lines()
        .skip(3)
        .take_while(|line| !line.is_empty())
        .collect()
}

#[test]
fn header_values_are_trimmed_and_whitespace_runs_fold_to_one_space() {
    let credentials = Credentials::new(AKID, SECRET, None);
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("My-Header", "  \"a   b \t c\"  "),
        ("Folded", "value1\r\n  value2\n\tvalue3"),
        ("Empty", "   "),
        ("Tab", "a\tb"),
        ("Control", "a\u{1}b"),
    ];
    let out = sign(&simple_request(&headers), &vector_params(&credentials));
    assert_eq!(
        canonical_header_lines(&out),
        [
            "control:a\u{1}b",
            "empty:",
            "folded:value1 value2 value3",
            "host:example.amazonaws.com",
            "my-header:\"a b c\"",
            "tab:a b",
            "x-amz-date:20150830T123600Z",
        ]
    );
    assert_eq!(
        out.signed_headers(),
        "control;empty;folded;host;my-header;tab;x-amz-date"
    );
}

#[test]
fn repeated_headers_join_with_commas_in_arrival_order() {
    let credentials = Credentials::new(AKID, SECRET, None);
    let headers = [
        ("My-Header1", "value4"),
        ("host", "example.amazonaws.com"),
        ("my-header1", " value1 "),
        ("MY-HEADER1", "value3"),
        ("My-Header1", "value2"),
    ];
    let out = sign(&simple_request(&headers), &vector_params(&credentials));
    assert_eq!(
        canonical_header_lines(&out),
        [
            "host:example.amazonaws.com",
            "my-header1:value4,value1,value3,value2",
            "x-amz-date:20150830T123600Z",
        ]
    );
    assert_eq!(
        out.signature(),
        "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"
    );
}

#[test]
fn signer_owned_input_headers_are_replaced_not_signed() {
    let credentials = Credentials::new(AKID, SECRET, Some("token".to_owned()));
    let headers = [
        ("host", "example.amazonaws.com"),
        ("Authorization", "client-supplied"),
        ("X-Amz-Date", "19990101T000000Z"),
        ("X-Amz-Security-Token", "client-token"),
    ];
    let out = sign(&simple_request(&headers), &vector_params(&credentials));
    assert_eq!(out.signed_headers(), "host;x-amz-date;x-amz-security-token");
    assert!(!out.canonical_request().contains("client"));
    assert!(!out.canonical_request().contains("1999"));
    let names: Vec<&str> = out.headers().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["x-amz-date", "x-amz-security-token", "authorization"]
    );
    assert_eq!(out.headers()[1].1, "token");
}

#[test]
fn omit_mode_adds_the_token_after_signing() {
    let with_token = Credentials::new(AKID, SECRET, Some("token".to_owned()));
    let without = Credentials::new(AKID, SECRET, None);
    let headers = [("host", "example.amazonaws.com")];
    let mut params = vector_params(&with_token);
    params.settings.session_token_mode = SessionTokenMode::Omit;
    let omitted = sign(&simple_request(&headers), &params);
    let plain = sign(&simple_request(&headers), &vector_params(&without));
    assert_eq!(omitted.signature(), plain.signature());
    assert_eq!(omitted.signed_headers(), "host;x-amz-date");
    assert!(
        omitted
            .headers()
            .iter()
            .any(|(n, v)| *n == "x-amz-security-token" && v == "token")
    );
}

#[test]
fn checksum_header_is_added_signed_and_equals_the_payload_hash() {
    let credentials = Credentials::new(AKID, SECRET, None);
    let headers = [
        ("host", "example.amazonaws.com"),
        ("x-amz-content-sha256", "bogus"),
    ];
    let mut params = vector_params(&credentials);
    params.settings.payload_checksum_header = true;
    let out = sign(&simple_request(&headers), &params);
    assert_eq!(out.signed_headers(), "host;x-amz-content-sha256;x-amz-date");
    assert!(
        out.headers()
            .iter()
            .any(|(n, v)| *n == "x-amz-content-sha256" && v == EMPTY_PAYLOAD_SHA256)
    );
    assert!(
        out.canonical_request()
            .ends_with(&format!("\n{EMPTY_PAYLOAD_SHA256}"))
    );

    let precomputed = SignableRequest {
        payload: Payload::Precomputed("UNSIGNED-PAYLOAD"),
        ..simple_request(&headers)
    };
    let out = sign(&precomputed, &params);
    assert!(out.canonical_request().ends_with("\nUNSIGNED-PAYLOAD"));
}

#[test]
fn time_is_converted_to_utc() {
    let credentials = Credentials::new(AKID, SECRET, None);
    let headers = [("host", "example.amazonaws.com")];
    let mut params = vector_params(&credentials);
    params.time = params
        .time
        .to_offset(UtcOffset::from_hms(-9, -30, 0).expect("offset"));
    let out = sign(&simple_request(&headers), &params);
    assert_eq!(
        out.signature(),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let credentials = Credentials::new(AKID, SECRET, Some("SESSIONTOKEN".to_owned()));
    let shown = format!("{credentials:?}");
    assert!(shown.contains(AKID));
    assert!(!shown.contains(SECRET) && !shown.contains("SESSIONTOKEN"));

    let headers = [
        ("host", "example.amazonaws.com"),
        ("x-secret", "HEADERVALUE"),
    ];
    let params = vector_params(&credentials);
    let req = simple_request(&headers);
    let out = sign(&req, &params);
    for shown in [
        format!("{out:?}"),
        format!("{params:?}"),
        format!("{req:?}"),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("SESSIONTOKEN"), "{shown}");
        assert!(!shown.contains("HEADERVALUE"), "{shown}");
        assert!(!shown.contains(out.signature()), "{shown}");
    }
    let mut cache = SigningKeyCache::new();
    cache.sign(&req, &params);
    assert!(!format!("{cache:?}").contains(SECRET));
}

#[test]
fn key_cache_reuses_keys_and_stays_bounded() {
    let credentials = Credentials::new(AKID, SECRET, None);
    let headers = [("host", "example.amazonaws.com")];
    let req = simple_request(&headers);
    let mut cache = SigningKeyCache::new();
    let base = vector_params(&credentials);
    for _ in 0..3 {
        assert_eq!(
            cache.sign(&req, &base).signature(),
            sign(&req, &base).signature()
        );
    }
    assert_eq!(cache.len(), 1);
    // Same day, later time: same key. Next day, other region or service: new keys.
    let later = SigningParams {
        time: base.time + time::Duration::hours(10),
        ..base
    };
    assert_eq!(
        cache.sign(&req, &later).signature(),
        sign(&req, &later).signature()
    );
    assert_eq!(cache.len(), 1);
    for day in 1..10 {
        let params = SigningParams {
            time: base.time + time::Duration::days(day),
            ..base
        };
        assert_eq!(
            cache.sign(&req, &params).signature(),
            sign(&req, &params).signature()
        );
    }
    assert_eq!(cache.len(), KEY_CACHE_CAPACITY);
    let other = Credentials::new(AKID, "another-secret", None);
    let params = SigningParams {
        credentials: &other,
        ..base
    };
    assert_eq!(
        cache.sign(&req, &params).signature(),
        sign(&req, &params).signature()
    );
    cache.clear();
    assert!(cache.is_empty());
}

/// Arbitrary bytes (lossily made UTF-8) anywhere in the request, and extreme times, never panic.
#[test]
fn arbitrary_input_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0xdead_beef);
    let credentials = Credentials::new("AK", "", Some(String::new()));
    let random_text = |rng: &mut fastrand::Rng| {
        let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let times = [
        OffsetDateTime::UNIX_EPOCH,
        Date::MIN.midnight().assume_utc(),
        Date::MAX.with_hms(23, 59, 59).expect("time").assume_utc(),
        Date::MAX
            .with_hms(23, 59, 59)
            .expect("time")
            .assume_offset(UtcOffset::from_hms(-23, 0, 0).expect("offset")),
        Date::MIN
            .midnight()
            .assume_offset(UtcOffset::from_hms(23, 0, 0).expect("offset")),
    ];
    let mut cache = SigningKeyCache::new();
    for i in 0..3000 {
        let method = random_text(&mut rng);
        let path = random_text(&mut rng);
        let query = random_text(&mut rng);
        let owned: Vec<(String, String)> = (0..rng.usize(0..5))
            .map(|_| (random_text(&mut rng), random_text(&mut rng)))
            .collect();
        let headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let body = random_text(&mut rng);
        let region = random_text(&mut rng);
        let req = SignableRequest {
            method: &method,
            path: &path,
            query: &query,
            headers: &headers,
            payload: if i % 2 == 0 {
                Payload::Bytes(body.as_bytes())
            } else {
                Payload::Precomputed(&body)
            },
        };
        let params = SigningParams {
            credentials: &credentials,
            region: &region,
            service: "s",
            time: times[i % times.len()],
            settings: SigningSettings {
                double_uri_encode: rng.bool(),
                payload_checksum_header: rng.bool(),
                session_token_mode: if rng.bool() {
                    SessionTokenMode::Include
                } else {
                    SessionTokenMode::Omit
                },
            },
        };
        let out = cache.sign(&req, &params);
        assert_eq!(out.signature().len(), 64);
        assert_eq!(out.headers()[0].1.len(), 16);
        let _ = canonical_query(&query);
        let _ = canonical_uri(&path, &params.settings);
    }
}

// ---- Differential test against the `aws-sigv4` crate -------------------------------------------
//
// Both signers get the same wire request (method, already-encoded path, raw query, headers, body)
// and must produce the same headers (hence the same canonical request and signature). Input
// classes where aws-sigv4 deviates from the spec are not generated:
// - header values containing tabs or line breaks: aws-sigv4 folds only spaces and rejects CR/LF,
//   while the suite's obs-fold case, botocore and the Java SDK fold all ASCII whitespace;
// - query escapes that decode to invalid UTF-8 (`%FF`): aws-sigv4 decodes through a lossy UTF-8
//   step and signs U+FFFD instead of the bytes sent;
// - the headers aws-sigv4 never signs (`user-agent`, `x-amzn-trace-id`, `transfer-encoding`):
//   this signer signs exactly what it is given, the caller chooses.
// Wire paths are ASCII (hyper only delivers ASCII), with UTF-8 percent-encoded.

#[derive(Debug)]
struct RandomCase {
    method: &'static str,
    host: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    precomputed: Option<String>,
    token: Option<String>,
    region: &'static str,
    service: &'static str,
    time: OffsetDateTime,
    settings: SigningSettings,
}

const PATH_PIECES: &[&str] = &[
    "a",
    "Z",
    "09",
    "-",
    ".",
    "_",
    "~",
    "%3A",
    "%3a",
    "%20",
    "%2F",
    "%25",
    "%E1%88%B4",
    "%C3%A9",
    "@",
    ":",
    "$",
    "!",
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
];

fn random_piece(rng: &mut fastrand::Rng, pieces: &[&str], max: usize) -> String {
    (0..rng.usize(0..=max))
        .map(|_| *rng.choice(pieces).expect("pieces"))
        .collect()
}

fn random_case(rng: &mut fastrand::Rng) -> RandomCase {
    let mut path = String::new();
    for _ in 0..rng.usize(0..6) {
        path.push('/');
        match rng.u8(0..10) {
            0 => path.push('.'),
            1 => path.push_str(".."),
            2 => {}
            3 => path.push_str("..."),
            _ => path.push_str(&random_piece(rng, PATH_PIECES, 5)),
        }
    }
    if path.is_empty() || rng.u8(0..4) == 0 {
        path.push('/');
    }

    let mut parts: Vec<String> = Vec::new();
    for _ in 0..rng.usize(0..6) {
        let name = if !parts.is_empty() && rng.u8(0..4) == 0 {
            // A duplicate name.
            let previous = rng.choice(&parts).expect("parts").clone();
            previous.split('=').next().unwrap_or_default().to_owned()
        } else {
            random_piece(rng, QUERY_PIECES, 4)
        };
        let part = match rng.u8(0..5) {
            0 => name,
            1 => format!("{name}="),
            2 => format!(
                "{name}={}={}",
                random_piece(rng, QUERY_PIECES, 3),
                random_piece(rng, QUERY_PIECES, 3)
            ),
            _ => format!("{name}={}", random_piece(rng, QUERY_PIECES, 6)),
        };
        parts.push(part);
    }
    let query = parts.join("&");

    let host = if rng.bool() {
        "example.amazonaws.com".to_owned()
    } else {
        format!("lambda.us-east-1.amazonaws.com:{}", rng.u16(1..65535))
    };
    let mut headers = vec![(
        if rng.bool() { "Host" } else { "host" }.to_owned(),
        host.clone(),
    )];
    for _ in 0..rng.usize(0..7) {
        let name = *rng.choice(HEADER_NAMES).expect("names");
        let value: String = (0..rng.usize(0..30))
            .map(|_| {
                if rng.u8(0..5) == 0 {
                    ' '
                } else {
                    char::from(rng.u8(0x21..0x7f))
                }
            })
            .collect();
        let position = rng.usize(0..=headers.len());
        headers.insert(position, (name.to_owned(), value));
    }

    let body: Vec<u8> = (0..rng.usize(0..2048)).map(|_| rng.u8(..)).collect();
    let precomputed = match rng.u8(0..10) {
        0 => Some("UNSIGNED-PAYLOAD".to_owned()),
        1 => Some(hex::encode(Sha256::digest(b"other"))),
        _ => None,
    };
    let token = rng.bool().then(|| {
        (0..rng.usize(16..200))
            .map(|_| *rng.choice(b"ABCXYZabcxyz0189+/=".iter()).expect("alphabet") as char)
            .collect()
    });
    let offset = UtcOffset::from_whole_seconds(rng.i32(-12 * 3600..=14 * 3600)).expect("offset");
    let time = OffsetDateTime::from_unix_timestamp(rng.i64(946_684_800..4_102_444_800))
        .expect("timestamp")
        .to_offset(offset);
    let settings = SigningSettings {
        double_uri_encode: rng.u8(0..10) != 0,
        payload_checksum_header: rng.u8(0..4) == 0,
        session_token_mode: if rng.u8(0..5) == 0 {
            SessionTokenMode::Omit
        } else {
            SessionTokenMode::Include
        },
    };
    RandomCase {
        method: rng
            .choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
            .expect("method"),
        host,
        path,
        query,
        headers,
        body,
        precomputed,
        token,
        region: rng
            .choice(["us-east-1", "eu-west-3", "ap-southeast-2"])
            .expect("region"),
        service: rng
            .choice(["lambda", "execute-api", "sts"])
            .expect("service"),
        time,
        settings,
    }
}

fn sign_with_aws_sigv4(case: &RandomCase) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SessionTokenMode as TheirTokenMode, SignableBody,
        SignableRequest as TheirRequest, SigningSettings as TheirSettings,
        UriPathNormalizationMode,
    };
    let identity =
        aws_credential_types::Credentials::new(AKID, SECRET, case.token.clone(), None, "test")
            .into();
    let mut settings = TheirSettings::default();
    if !case.settings.double_uri_encode {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    if case.settings.payload_checksum_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if case.settings.session_token_mode == SessionTokenMode::Omit {
        settings.session_token_mode = TheirTokenMode::Exclude;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(case.region)
        .name(case.service)
        .time(SystemTime::from(case.time))
        .settings(settings)
        .build()
        .expect("aws-sigv4 params")
        .into();
    let mut uri = format!("https://{}{}", case.host, case.path);
    if !case.query.is_empty() {
        uri.push('?');
        uri.push_str(&case.query);
    }
    let body = match &case.precomputed {
        Some(hash) => SignableBody::Precomputed(hash.clone()),
        None => SignableBody::Bytes(&case.body),
    };
    let request = TheirRequest::new(
        case.method,
        uri,
        case.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body,
    )
    .expect("aws-sigv4 request");
    let output = aws_sigv4::http_request::sign(request, &params).expect("aws-sigv4 sign");
    let (instructions, _signature) = output.into_parts();
    let mut headers: Vec<(String, String)> = instructions
        .headers()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    headers.sort();
    headers
}

#[test]
fn agrees_with_aws_sigv4_on_random_requests() {
    let mut rng = fastrand::Rng::with_seed(0x5167_4e34);
    let credentials_plain = Credentials::new(AKID, SECRET, None);
    let mut cache = SigningKeyCache::new();
    for i in 0..500 {
        let case = random_case(&mut rng);
        let credentials = match &case.token {
            Some(token) => Credentials::new(AKID, SECRET, Some(token.clone())),
            None => credentials_plain.clone(),
        };
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let req = SignableRequest {
            method: case.method,
            path: &case.path,
            query: &case.query,
            headers: &headers,
            payload: match &case.precomputed {
                Some(hash) => Payload::Precomputed(hash),
                None => Payload::Bytes(&case.body),
            },
        };
        let params = SigningParams {
            credentials: &credentials,
            region: case.region,
            service: case.service,
            time: case.time,
            settings: case.settings,
        };
        let out = cache.sign(&req, &params);
        let mut ours: Vec<(String, String)> = out
            .headers()
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        ours.sort();
        let theirs = sign_with_aws_sigv4(&case);
        assert_eq!(
            ours,
            theirs,
            "case {i}: {case:#?}\ncanonical request:\n{}",
            out.canonical_request()
        );
    }
}
