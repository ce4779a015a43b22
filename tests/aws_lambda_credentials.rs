//! The `aws-lambda` credential chain that reads the gateway's own environment
//! (`plugins/aws-lambda/credentials.lua`): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE` and `HOME`.
//!
//! Tests share one process and `std::env::set_var` is disallowed, so each test runs the real
//! `moongate` binary as a child with a cleared environment that holds only `PATH`, `RUST_LOG` and the
//! variables under test. In front of it stands an API Gateway that knows several key pairs, as an AWS
//! account does: it re-signs each request with the `aws-sigv4` crate using the secret and session
//! token of the access key the request names, answers 403 with AWS's error when they differ, and
//! otherwise says which key signed.
//!
//! The order credentials.lua documents, for an `authorization.iam` without accesskey/secretkey:
//! 1. `iam.credentials_file` or `iam.profile` in the conf: that file and profile first;
//! 2. the environment keys, with `AWS_SESSION_TOKEN`;
//! 3. `AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`, with the profile `iam.profile`,
//!    else `AWS_PROFILE`, else `default`.
//!
//! Static `accesskey`/`secretkey` in the conf always win.
//!
//! The same child-process harness checks `ssl_verify` against a function whose certificate a test CA
//! signed, trusted through OpenSSL's `SSL_CERT_FILE` in the child's environment.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::ADMIN_KEY;
use common::process::{GatewayProcess, Spawn};
use common::sigv4::{Iam, SIGNATURE_MISMATCH, verify_sigv4};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::Digest;

// Each source of credentials has its own key pair, so the stand-in can tell which one signed.
const ENV_ACCESS: &str = "AKIDFROMENVIRONMENT";
const ENV_SECRET: &str = "envSecret/K7MDENG+bPxRfiCYEXAMPLEKEYenv";
const ENV_TOKEN: &str = "IQoJb3JpZ2luX2VjEnv/session+token==";
const DEFAULT_ACCESS: &str = "AKIDFILEDEFAULT";
const DEFAULT_SECRET: &str = "defaultSecret/K7MDENG+bPxRfiCYEXAMPLE";
const OTHER_ACCESS: &str = "AKIDFILEOTHER";
const OTHER_SECRET: &str = "otherSecret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const OTHER_TOKEN: &str = "IQoJb3JpZ2luX2VjOther/profile+token==";
const CONF_FILE_ACCESS: &str = "AKIDCONFFILE";
const CONF_FILE_SECRET: &str = "confFileSecret/K7MDENG+bPxRfiCYEXAMPLE";
const HOME_ACCESS: &str = "AKIDHOMEDOTAWS";
const HOME_SECRET: &str = "homeSecret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const STATIC_ACCESS: &str = "AKIDSTATICINCONF";
const STATIC_SECRET: &str = "staticSecret/K7MDENG+bPxRfiCYEXAMPLE";
/// A secret the account does not know, for the 403 tests; it must never reach the gateway's log.
const WRONG_SECRET: &str = "wrongSecret/NEVER+LOG+THIS+VALUE+0123456789";

/// The key pairs the stand-in account knows.
fn account() -> Vec<Iam> {
    let iam = |access, secret, token| Iam {
        access,
        secret,
        token,
        region: "us-east-1",
        service: "execute-api",
    };
    vec![
        iam(ENV_ACCESS, ENV_SECRET, Some(ENV_TOKEN)),
        iam(DEFAULT_ACCESS, DEFAULT_SECRET, None),
        iam(OTHER_ACCESS, OTHER_SECRET, Some(OTHER_TOKEN)),
        iam(CONF_FILE_ACCESS, CONF_FILE_SECRET, None),
        iam(HOME_ACCESS, HOME_SECRET, None),
        iam(STATIC_ACCESS, STATIC_SECRET, None),
    ]
}

// ---------------------------------------------------------------------------------------------
// The stand-in API Gateway

struct ApiGateway {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl ApiGateway {
    async fn start() -> ApiGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api gateway");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let keys = Arc::new(account());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let keys = keys.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(keys.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ApiGateway { addr, requests }
    }

    fn function_uri(&self) -> String {
        format!("http://{}/default/credentials", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn aws_error(kind: &str, message: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        json!({ "message": message }).to_string(),
    )));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().expect("static"));
    h.insert("x-amzn-errortype", kind.parse().expect("ascii kind"));
    resp
}

/// The access key named in `Credential=` of a SigV4 `Authorization` header.
fn credential_access(authorization: &str) -> Option<&str> {
    authorization
        .split([' ', ','])
        .find_map(|f| f.strip_prefix("Credential="))
        .and_then(|c| c.split('/').next())
}

async fn answer(
    keys: Arc<Vec<Iam>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let named = credential_access(&authorization);
    // An unknown (or missing) access key is checked against the first pair, which yields AWS's
    // answer for it: UnrecognizedClientException, or MissingAuthenticationToken.
    let iam = keys
        .iter()
        .find(|k| Some(k.access) == named)
        .unwrap_or(&keys[0]);
    if let Err((kind, mut message)) = verify_sigv4(iam, &parts, &body) {
        if message == SIGNATURE_MISMATCH {
            // API Gateway goes on with the canonical request it expected, signed headers and all:
            // the session token comes back in the body.
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
            };
            message.push_str(&format!(
                "\n\nThe Canonical String for this request should have been\n'{}\n{}\n\nhost:{}\nx-amz-date:{}\nx-amz-security-token:{}\n\nhost;x-amz-date;x-amz-security-token\n{}'\n",
                parts.method,
                parts.uri.path(),
                header("host"),
                header("x-amz-date"),
                header("x-amz-security-token"),
                hex::encode(sha2::Sha256::digest(&body)),
            ));
        }
        return Ok(aws_error(kind, &message));
    }
    let signed_headers = authorization
        .split(", ")
        .find_map(|f| f.strip_prefix("SignedHeaders="))
        .unwrap_or_default();
    let echo = json!({
        "signed_by": iam.access,
        "security_token": parts.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok()),
        "signed_headers": signed_headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// The gateway as a child process

/// A `moongate` child on loopback ports, killed when dropped, whose stderr is kept for assertions.
struct Moongate {
    process: GatewayProcess,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Moongate {
    type Target = GatewayProcess;

    fn deref(&self) -> &GatewayProcess {
        &self.process
    }
}

/// What a client of the gateway sees.
struct Answer {
    status: u16,
    error_type: Option<String>,
    body: Value,
}

impl Moongate {
    /// Starts the binary with only `PATH`, `RUST_LOG` and `env` in its environment.
    async fn spawn(env: &[(&str, &str)]) -> Moongate {
        Self::spawn_logging(env, "info").await
    }

    async fn spawn_logging(env: &[(&str, &str)], rust_log: &str) -> Moongate {
        let dir = tempfile::tempdir().expect("temp dir");
        let how = Spawn {
            env: Some(env),
            rust_log,
            file_limit_kib: None,
        };
        Moongate {
            process: GatewayProcess::spawn_with(dir.path(), how).await,
            _dir: dir,
        }
    }

    /// PUTs an aws-lambda route at `uri` with this `authorization.iam`.
    async fn route(&self, id: &str, uri: &str, function_uri: &str, iam: Value) {
        let route = json!({"uri": uri, "plugins": {"aws-lambda": {
            "function_uri": function_uri,
            "authorization": {"iam": iam},
        }}});
        let resp = self
            .client
            .put(format!("http://{}/apisix/admin/routes/{id}", self.admin))
            .header("X-API-KEY", ADMIN_KEY)
            .body(route.to_string())
            .send()
            .await
            .expect("admin request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT route {id}: {status} {text}");
    }

    async fn get(&self, path: &str) -> Answer {
        let resp = self
            .client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("request through the gateway");
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            error_type,
            body,
        }
    }

    /// Asserts `path` answered 200, signed by `access`, with `token` as x-amz-security-token.
    async fn assert_signed_by(&self, path: &str, access: &str, token: Option<&str>) {
        let a = self.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.body["signed_by"], access, "{path}: {}", a.body);
        assert_eq!(
            a.body["security_token"].as_str(),
            token,
            "{path}: {}",
            a.body
        );
        let signed = a.body["signed_headers"].as_str().unwrap_or_default();
        assert_eq!(
            signed.contains("x-amz-security-token"),
            token.is_some(),
            "{path}: the token is signed exactly when it is sent: {signed}"
        );
    }

    /// Kills the child and returns everything it wrote to stderr.
    async fn stop(self) -> String {
        self.process.stop().await
    }
}

/// Writes the shared credentials file every test uses: `[default]` and `[other]` (with a token).
fn shared_credentials(dir: &Path) -> String {
    let path = dir.join("credentials");
    std::fs::write(
        &path,
        format!(
            "# written by tests/aws_lambda_credentials.rs\n\
             [default]\naws_access_key_id = {DEFAULT_ACCESS}\naws_secret_access_key = {DEFAULT_SECRET}\n\n\
             [other]\naws_access_key_id={OTHER_ACCESS}\naws_secret_access_key={OTHER_SECRET}\n\
             aws_session_token = {OTHER_TOKEN}\n"
        ),
    )
    .expect("write credentials");
    path.to_string_lossy().into_owned()
}

/// A second credentials file, named by `iam.credentials_file` in the conf.
fn conf_credentials(dir: &Path) -> String {
    let path = dir.join("conf-credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = {CONF_FILE_ACCESS}\naws_secret_access_key = {CONF_FILE_SECRET}\n"
        ),
    )
    .expect("write credentials");
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. The environment

#[tokio::test]
async fn environment_keys_and_session_token_sign_a_route_whose_iam_has_no_keys() {
    let aws = ApiGateway::start().await;
    let gw = Moongate::spawn(&[
        ("AWS_ACCESS_KEY_ID", ENV_ACCESS),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
    ])
    .await;
    gw.route("1", "/fn", &aws.function_uri(), json!({})).await;

    gw.assert_signed_by("/fn", ENV_ACCESS, Some(ENV_TOKEN))
        .await;
    // Cached for a minute per conf: a second request signs the same way.
    gw.assert_signed_by("/fn", ENV_ACCESS, Some(ENV_TOKEN))
        .await;
    assert_eq!(aws.requests(), 2);

    let log = gw.stop().await;
    assert!(
        !log.contains(ENV_SECRET),
        "the secret reached the log:\n{log}"
    );
    assert!(
        !log.contains(ENV_TOKEN),
        "the token reached the log:\n{log}"
    );
}

#[tokio::test]
async fn without_any_credentials_the_client_gets_500_and_aws_is_not_called() {
    let aws = ApiGateway::start().await;
    // Neither keys, nor AWS_SHARED_CREDENTIALS_FILE, nor HOME; and a half-set pair is not a pair.
    let gw = Moongate::spawn(&[("AWS_ACCESS_KEY_ID", ENV_ACCESS)]).await;
    gw.route("1", "/fn", &aws.function_uri(), json!({})).await;

    let a = gw.get("/fn").await;
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(!a.body.to_string().contains("AWS_"), "{}", a.body);
    assert_eq!(aws.requests(), 0);

    let log = gw.stop().await;
    assert!(log.contains("no AWS credentials"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 2. The shared credentials file

#[tokio::test]
async fn without_environment_keys_the_shared_file_default_profile_signs_and_profile_selects_another()
 {
    let aws = ApiGateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_credentials(dir.path());
    let gw = Moongate::spawn(&[("AWS_SHARED_CREDENTIALS_FILE", &file)]).await;
    gw.route("1", "/default", &aws.function_uri(), json!({}))
        .await;
    gw.route(
        "2",
        "/other",
        &aws.function_uri(),
        json!({"profile": "other"}),
    )
    .await;

    gw.assert_signed_by("/default", DEFAULT_ACCESS, None).await;
    gw.assert_signed_by("/other", OTHER_ACCESS, Some(OTHER_TOKEN))
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn aws_profile_selects_the_file_profile_and_a_conf_profile_overrides_it() {
    let aws = ApiGateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_credentials(dir.path());
    let gw = Moongate::spawn(&[
        ("AWS_SHARED_CREDENTIALS_FILE", &file),
        ("AWS_PROFILE", "other"),
    ])
    .await;
    gw.route("1", "/env-profile", &aws.function_uri(), json!({}))
        .await;
    gw.route(
        "2",
        "/conf-profile",
        &aws.function_uri(),
        json!({"profile": "default"}),
    )
    .await;

    gw.assert_signed_by("/env-profile", OTHER_ACCESS, Some(OTHER_TOKEN))
        .await;
    gw.assert_signed_by("/conf-profile", DEFAULT_ACCESS, None)
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn home_dot_aws_credentials_is_read_when_no_file_is_named_and_the_conf_file_wins_over_it() {
    let aws = ApiGateway::start().await;
    let home = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(home.path().join(".aws")).expect("mkdir .aws");
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = {HOME_ACCESS}\naws_secret_access_key = {HOME_SECRET}\n"
        ),
    )
    .expect("write credentials");
    let conf_file = conf_credentials(home.path());
    let home_path = home.path().to_string_lossy().into_owned();
    let gw = Moongate::spawn(&[("HOME", &home_path)]).await;
    gw.route("1", "/home", &aws.function_uri(), json!({})).await;
    gw.route(
        "2",
        "/conf-file",
        &aws.function_uri(),
        json!({"credentials_file": conf_file}),
    )
    .await;

    gw.assert_signed_by("/home", HOME_ACCESS, None).await;
    gw.assert_signed_by("/conf-file", CONF_FILE_ACCESS, None)
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_session_token_alone_in_the_environment_is_not_attached_to_file_keys() {
    let aws = ApiGateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_credentials(dir.path());
    let gw = Moongate::spawn(&[
        ("AWS_SHARED_CREDENTIALS_FILE", &file),
        ("AWS_ACCESS_KEY_ID", ENV_ACCESS),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
    ])
    .await;
    gw.route("1", "/fn", &aws.function_uri(), json!({})).await;

    gw.assert_signed_by("/fn", DEFAULT_ACCESS, None).await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Precedence

#[tokio::test]
async fn environment_beats_the_shared_file_unless_the_conf_names_a_profile_or_a_file() {
    let aws = ApiGateway::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_credentials(dir.path());
    let conf_file = conf_credentials(dir.path());
    let env = [
        ("AWS_ACCESS_KEY_ID", ENV_ACCESS),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
        ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
    ];
    let mut with_profile = env.to_vec();
    with_profile.push(("AWS_PROFILE", "other"));
    let (gw, gw_profile) = tokio::join!(Moongate::spawn(&env), Moongate::spawn(&with_profile));
    let uri = aws.function_uri();
    gw.route("1", "/chain", &uri, json!({})).await;
    gw.route("2", "/conf-profile", &uri, json!({"profile": "other"}))
        .await;
    gw.route(
        "3",
        "/conf-file",
        &uri,
        json!({"credentials_file": conf_file}),
    )
    .await;
    gw.route("4", "/absent-profile", &uri, json!({"profile": "absent"}))
        .await;
    gw.route(
        "5",
        "/static",
        &uri,
        json!({"accesskey": STATIC_ACCESS, "secretkey": STATIC_SECRET, "profile": "other"}),
    )
    .await;
    gw_profile.route("1", "/chain", &uri, json!({})).await;

    // 2 before 3: the environment beats AWS_SHARED_CREDENTIALS_FILE, even with AWS_PROFILE set.
    gw.assert_signed_by("/chain", ENV_ACCESS, Some(ENV_TOKEN))
        .await;
    gw_profile
        .assert_signed_by("/chain", ENV_ACCESS, Some(ENV_TOKEN))
        .await;
    // 1 before 2: a profile or file named in the conf is read before the environment ...
    gw.assert_signed_by("/conf-profile", OTHER_ACCESS, Some(OTHER_TOKEN))
        .await;
    gw.assert_signed_by("/conf-file", CONF_FILE_ACCESS, None)
        .await;
    // ... and when it has no such profile, the environment still signs.
    gw.assert_signed_by("/absent-profile", ENV_ACCESS, Some(ENV_TOKEN))
        .await;
    // Static keys win over everything, and the environment's token is not attached to them.
    gw.assert_signed_by("/static", STATIC_ACCESS, None).await;

    gw.stop().await;
    gw_profile.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Wrong keys

/// The stand-in's mismatch answer echoes the expected canonical request with the session token, as
/// API Gateway's does, so the log check also covers the token in AWS's error body.
#[tokio::test]
async fn a_wrong_environment_secret_gets_aws_403_and_never_reaches_the_log() {
    let aws = ApiGateway::start().await;
    let wrong_secret = [
        ("AWS_ACCESS_KEY_ID", ENV_ACCESS),
        ("AWS_SECRET_ACCESS_KEY", WRONG_SECRET),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
    ];
    let unknown_key = [
        ("AWS_ACCESS_KEY_ID", "AKIDNOBODYKNOWS"),
        ("AWS_SECRET_ACCESS_KEY", WRONG_SECRET),
    ];
    // The most verbose level: not even a debug line may hold the secret.
    let (gw, gw_unknown) = tokio::join!(
        Moongate::spawn_logging(&wrong_secret, "trace"),
        Moongate::spawn_logging(&unknown_key, "trace"),
    );
    gw.route("1", "/fn", &aws.function_uri(), json!({})).await;
    gw_unknown
        .route("1", "/fn", &aws.function_uri(), json!({}))
        .await;

    let a = gw.get("/fn").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.error_type.as_deref(), Some("InvalidSignatureException"));
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(SIGNATURE_MISMATCH), "{}", a.body);

    let a = gw_unknown.get("/fn").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.error_type.as_deref(), Some("UnrecognizedClientException"));
    assert_eq!(
        a.body,
        json!({ "message": "The security token included in the request is invalid." })
    );
    assert_eq!(aws.requests(), 2, "each gateway called AWS once");

    for log in [gw.stop().await, gw_unknown.stop().await] {
        assert!(
            log.contains("moongate started"),
            "stderr was captured:\n{log}"
        );
        assert!(
            !log.contains(WRONG_SECRET),
            "the secret reached the log:\n{log}"
        );
        assert!(
            !log.contains(ENV_TOKEN),
            "the token reached the log:\n{log}"
        );
    }
}

/// A function over TLS whose certificate (for `localhost`) a test CA signed; answers 200 `tls ok`.
async fn tls_function() -> (SocketAddr, tempfile::TempDir) {
    let [ca, cert, key, _, _] = common::etcd::test_pki();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("write CA");
    let acceptor = common::tls_acceptor_pem(&cert, &key, &[b"http/1.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"tls ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, dir)
}

impl Moongate {
    async fn apikey_route(&self, uri: &str, function_uri: &str) {
        let route = json!({"uri": uri, "plugins": {"aws-lambda": {
            "function_uri": function_uri, "authorization": {"apikey": "k"}}}});
        let resp = self
            .client
            .put(format!("http://{}/apisix/admin/routes/tls", self.admin))
            .header("X-API-KEY", ADMIN_KEY)
            .body(route.to_string())
            .send()
            .await
            .expect("admin request");
        assert!(resp.status().is_success(), "{}", resp.status());
    }
}

#[tokio::test]
async fn ssl_verify_true_accepts_a_function_whose_ca_is_trusted_and_refuses_it_otherwise() {
    let (addr, dir) = tls_function().await;
    let function_uri = format!("https://localhost:{}/default/fn", addr.port());
    let ca = dir.path().join("ca.pem");
    // The system roots, extended with the test CA through OpenSSL's SSL_CERT_FILE.
    let trusting = Moongate::spawn(&[("SSL_CERT_FILE", ca.to_str().expect("utf-8 path"))]).await;
    trusting.apikey_route("/tls", &function_uri).await;
    let a = trusting.get("/tls").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, Value::String("tls ok".into()));
    // Without the CA (verification on, the default), the handshake fails: 502.
    let distrusting = Moongate::spawn(&[]).await;
    distrusting.apikey_route("/tls", &function_uri).await;
    let a = distrusting.get("/tls").await;
    assert_eq!(a.status, 502, "{}", a.body);
    let log = distrusting.stop().await;
    assert!(
        log.contains("localhost"),
        "the log names the function host: {log}"
    );
}
