//! The TLS listener: certificates from `ssls` chosen by SNI, HTTP/1.1 and h2 through ALPN.

mod common;

use std::net::SocketAddr;

use common::{MockUpstream, TestGateway, route_to, self_signed};
use serde_json::{Value, json};

fn tls_client(name: &str, addr: SocketAddr, http2: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve(name, addr);
    if !http2 {
        builder = builder.http1_only();
    }
    builder.build().expect("tls client")
}

async fn gateway_with_cert(names: &[&str]) -> (TestGateway, MockUpstream) {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    let (cert, key) = self_signed(names);
    gw.put("/ssls/1", json!({"cert": cert, "key": key, "snis": names}))
        .await;
    gw.put("/routes/1", route_to("/tls", &up.node())).await;
    (gw, up)
}

#[tokio::test]
async fn serves_http1_and_h2_over_tls_with_the_sni_certificate() {
    let (gw, _up) = gateway_with_cert(&["test.com"]).await;
    let addr = gw.tls.expect("tls listener");
    let url = format!("https://test.com:{}/tls", addr.port());

    let resp = tls_client("test.com", addr, false)
        .get(&url)
        .send()
        .await
        .expect("h1 over tls");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");

    let resp = tls_client("test.com", addr, true)
        .get(&url)
        .send()
        .await
        .expect("h2 over tls");
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates h2"
    );
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn wildcard_sni_matches_subdomains() {
    let (gw, _up) = gateway_with_cert(&["*.wild.test"]).await;
    let addr = gw.tls.expect("tls listener");
    let url = format!("https://api.wild.test:{}/tls", addr.port());
    let resp = tls_client("api.wild.test", addr, false)
        .get(&url)
        .send()
        .await
        .expect("wildcard");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_sni_fails_the_handshake_and_the_listener_stays_up() {
    let (gw, _up) = gateway_with_cert(&["test.com"]).await;
    let addr = gw.tls.expect("tls listener");
    let bad = format!("https://other.com:{}/tls", addr.port());
    assert!(
        tls_client("other.com", addr, false)
            .get(&bad)
            .send()
            .await
            .is_err()
    );
    let good = format!("https://test.com:{}/tls", addr.port());
    let resp = tls_client("test.com", addr, false)
        .get(&good)
        .send()
        .await
        .expect("still serving");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_certificate_added_later_is_used_without_restart() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/tls", &up.node())).await;
    let addr = gw.tls.expect("tls listener");
    let url = format!("https://late.test:{}/tls", addr.port());
    assert!(
        tls_client("late.test", addr, false)
            .get(&url)
            .send()
            .await
            .is_err()
    );
    let (cert, key) = self_signed(&["late.test"]);
    gw.put(
        "/ssls/late",
        json!({"cert": cert, "key": key, "sni": "late.test"}),
    )
    .await;
    let resp = tls_client("late.test", addr, false)
        .get(&url)
        .send()
        .await
        .expect("new cert");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_invalid_certificate_is_refused_by_the_admin_api() {
    let gw = TestGateway::start().await;
    let (_, key) = self_signed(&["a.test"]);
    let bogus = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "A".repeat(200)
    );
    let (status, body) = gw
        .admin(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": bogus, "key": key, "sni": "a.test"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}
