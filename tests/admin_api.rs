//! The Admin API as an APISIX user drives it: verbs, status codes and response shapes.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, MockUpstream, TestGateway, VIEWER_KEY, route_to};
use serde_json::{Value, json};

#[tokio::test]
async fn put_creates_with_201_then_updates_with_200_in_apisix_shape() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(route_to("/a", "127.0.0.1:1980")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], "/apisix/routes/1");
    assert_eq!(body["value"]["id"], "1");
    assert_eq!(body["value"]["uri"], "/a");
    assert!(body["value"]["create_time"].is_i64());
    assert!(body["value"]["update_time"].is_i64());
    let created = body["value"]["create_time"].clone();

    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(route_to("/b", "127.0.0.1:1980")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"]["uri"], "/b");
    assert_eq!(body["value"]["create_time"], created);
}

#[tokio::test]
async fn get_one_and_list() {
    let gw = TestGateway::start().await;
    gw.put(
        "/upstreams/u1",
        json!({"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}, "name": "first"}),
    )
    .await;
    gw.put(
        "/upstreams/u2",
        json!({"type": "roundrobin", "nodes": {"127.0.0.1:1981": 1}, "name": "second"}),
    )
    .await;

    let (status, one) = gw.admin("GET", "/upstreams/u1", None).await;
    assert_eq!(status, 200);
    assert_eq!(one["key"], "/apisix/upstreams/u1");
    assert_eq!(one["value"]["name"], "first");
    assert!(one["createdIndex"].is_u64() && one["modifiedIndex"].is_u64());

    let (status, list) = gw.admin("GET", "/upstreams", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 2);
    assert_eq!(list["list"].as_array().map(Vec::len), Some(2));

    let (_, filtered) = gw.admin("GET", "/upstreams?name=sec", None).await;
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["list"][0]["value"]["name"], "second");

    let (status, _) = gw.admin("GET", "/upstreams?page=1&page_size=5", None).await;
    assert_eq!(status, 400, "page_size below 10 is refused");
}

#[tokio::test]
async fn missing_object_is_404() {
    let gw = TestGateway::start().await;
    let (status, body) = gw.admin("GET", "/routes/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Key not found");
    let (status, _) = gw.admin("DELETE", "/routes/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn post_generates_a_20_digit_id() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin("POST", "/routes", Some(route_to("/p", "127.0.0.1:1980")))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["value"]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 20, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(body["key"], format!("/apisix/routes/{id}"));
    let (status, _) = gw.admin("GET", &format!("/routes/{id}"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn post_is_refused_where_apisix_refuses_it() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin("POST", "/consumers", Some(json!({"username": "jack"})))
        .await;
    assert_eq!(status, 405);
    assert_eq!(
        body["error_msg"],
        "not supported `POST` method for consumer"
    );
}

#[tokio::test]
async fn patch_merges_and_patch_sub_path_replaces_one_attribute() {
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/a", "methods": ["GET"], "desc": "d", "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}}}),
    )
    .await;
    let (status, body) = gw
        .admin("PATCH", "/routes/1", Some(json!({"desc": "new"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"]["desc"], "new");
    assert_eq!(body["value"]["uri"], "/a");

    let (status, body) = gw
        .admin("PATCH", "/routes/1/methods", Some(json!(["POST", "PUT"])))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"]["methods"], json!(["POST", "PUT"]));

    let (status, body) = gw
        .admin(
            "PATCH",
            "/routes/1/upstream/nodes",
            Some(json!({"127.0.0.1:1981": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["value"]["upstream"]["nodes"],
        json!({"127.0.0.1:1981": 2})
    );

    let (status, _) = gw
        .admin("PATCH", "/routes/1", Some(json!({"uri": 5})))
        .await;
    assert_eq!(status, 400, "a patch producing an invalid route is refused");
    let (_, current) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(current["value"]["uri"], "/a");
}

#[tokio::test]
async fn delete_answers_in_apisix_shape() {
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/a", "127.0.0.1:1980")).await;
    let (status, body) = gw.admin("DELETE", "/routes/1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"deleted": "1", "key": "/apisix/routes/1"}));
    let (status, _) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn referenced_objects_cannot_be_deleted() {
    let gw = TestGateway::start().await;
    gw.put(
        "/upstreams/1",
        json!({"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}}),
    )
    .await;
    gw.put("/services/s1", json!({"upstream_id": "1"})).await;
    gw.put("/routes/r1", json!({"uri": "/a", "service_id": "s1"}))
        .await;
    gw.put("/plugin_configs/pc1", json!({"plugins": {}})).await;
    gw.put(
        "/routes/r2",
        json!({"uri": "/b", "upstream_id": "1", "plugin_config_id": "pc1"}),
    )
    .await;

    let (status, body) = gw.admin("DELETE", "/services/s1", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "can not delete this service, route [r1] is still using it now"
    );
    let (status, body) = gw.admin("DELETE", "/upstreams/1", None).await;
    assert_eq!(status, 400);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("can not delete this upstream")
    );
    let (status, body) = gw.admin("DELETE", "/plugin_configs/pc1", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = gw.admin("GET", "/upstreams/1", None).await;
    assert_eq!(status, 200, "the refused delete changed nothing");
}

#[tokio::test]
async fn reference_to_missing_upstream_is_refused() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(json!({"uri": "/a", "upstream_id": "404"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to fetch upstream info by upstream id [404], response code: 404"
    );
}

#[tokio::test]
async fn invalid_writes_get_400_and_change_nothing() {
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/keep", "127.0.0.1:1980"))
        .await;
    let cases = [
        (
            json!({"uri": 123, "upstream": {"nodes": {"127.0.0.1:1": 1}}}),
            "invalid configuration: property \"uri\" validation failed: wrong type: expected string, got number",
        ),
        (
            json!({"uri": "/a", "foo": 1, "upstream": {"nodes": {"127.0.0.1:1": 1}}}),
            "invalid configuration: additional properties forbidden, found foo",
        ),
    ];
    for (bad, expected) in cases {
        let (status, body) = gw.admin("PUT", "/routes/1", Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error_msg"], expected);
    }
    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(json!({"uri": "/a", "methods": ["FETCH"], "upstream": {"nodes": {"127.0.0.1:1": 1}}})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(json!({"uri": "/a", "host": "a.com", "hosts": ["b.com"], "upstream": {"nodes": {"127.0.0.1:1": 1}}})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(json!({"uri": "/a", "vars": [["arg_x", "~=~", "1"]], "upstream": {"nodes": {"127.0.0.1:1": 1}}})))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("failed to validate the 'vars' expression"),
        "{body}"
    );
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(json!({"uri": "/a", "plugins": {"no-such-plugin": {}}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_msg"], "unknown plugin [no-such-plugin]");

    let (_, current) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(current["value"]["uri"], "/keep");
}

#[tokio::test]
async fn bad_json_is_400_with_apisix_message() {
    let gw = TestGateway::start().await;
    let resp = gw
        .client
        .put(gw.admin_url("/routes/1"))
        .header("X-API-KEY", ADMIN_KEY)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid request body:"),
        "{body}"
    );
}

#[tokio::test]
async fn key_is_checked_from_header_query_and_cookie() {
    let gw = TestGateway::start().await;
    let resp = gw
        .client
        .get(gw.admin_url("/routes"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error_msg": "failed to check token", "description": "missing apikey"})
    );

    let resp = gw
        .client
        .get(gw.admin_url("/routes"))
        .header("X-API-KEY", "wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["description"], "wrong apikey");

    let resp = gw
        .client
        .get(gw.admin_url(&format!("/routes?api_key={ADMIN_KEY}")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let resp = gw
        .client
        .get(gw.admin_url("/routes"))
        .header("cookie", format!("x_api_key={ADMIN_KEY}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn viewer_key_may_only_read() {
    let gw = TestGateway::start().await;
    let resp = gw
        .client
        .get(gw.admin_url("/routes"))
        .header("X-API-KEY", VIEWER_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let resp = gw
        .client
        .put(gw.admin_url("/routes/1"))
        .header("X-API-KEY", VIEWER_KEY)
        .body(route_to("/a", "127.0.0.1:1").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["description"], "invalid method for role viewer");
}

#[tokio::test]
async fn every_resource_kind_round_trips() {
    let gw = TestGateway::start().await;
    let (cert, key) = common::self_signed(&["test.com"]);
    let objects = [
        (
            "/upstreams/1",
            json!({"nodes": {"127.0.0.1:1980": 1}, "type": "roundrobin"}),
        ),
        ("/services/1", json!({"upstream_id": "1"})),
        ("/consumers/jack", json!({"username": "jack"})),
        (
            "/ssls/1",
            json!({"cert": cert, "key": key, "snis": ["test.com"]}),
        ),
        ("/plugin_configs/1", json!({"plugins": {}})),
        ("/global_rules/1", json!({"plugins": {}})),
    ];
    for (path, body) in objects {
        let (status, resp) = gw.admin("PUT", path, Some(body)).await;
        assert_eq!(status, 201, "PUT {path}: {resp}");
        let (status, got) = gw.admin("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}");
        assert_eq!(got["key"], format!("/apisix{path}"));
    }
    let (_, ssl) = gw.admin("GET", "/ssls/1", None).await;
    assert!(
        ssl["value"].get("key").is_none(),
        "the private key is never returned"
    );
    let (status, _) = gw
        .admin("PUT", "/consumers", Some(json!({"username": "rose"})))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn plugin_endpoints_answer_like_apisix() {
    let gw = TestGateway::start().await;
    let (status, list) = gw.admin("GET", "/plugins/list", None).await;
    assert_eq!(status, 200);
    assert!(list.is_array());
    let (status, body) = gw.admin("PUT", "/plugins/reload", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, Value::String("done".into()));
    let (status, _) = gw.admin("GET", "/plugins/reload", None).await;
    assert_eq!(status, 405);
    let (status, body) = gw.admin("GET", "/plugins/not-a-plugin", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gw.admin("GET", "/schema/route", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "object");
}

#[tokio::test]
async fn admin_is_served_on_the_data_plane_port_to_loopback_clients() {
    let upstream = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    let resp = gw
        .client
        .put(gw.url("/apisix/admin/routes/1"))
        .header("X-API-KEY", ADMIN_KEY)
        .body(route_to("/hello", &upstream.node()).to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    let resp = gw.get("/hello").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_resource_type_is_404() {
    let gw = TestGateway::start().await;
    let (status, body) = gw.admin("GET", "/nothing", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error_msg"], "Unsupported resource type: nothing");
}

#[tokio::test]
async fn allow_admin_refuses_other_clients_before_reading_their_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::builder()
        .allow_admin(&["10.0.0.0/8", "fd00::/8"])
        .start()
        .await;
    // Loopback is not allowed: 403 even with the admin key.
    let (status, body) = gw.admin("GET", "/routes", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_msg"], "403 Forbidden");
    // Without a key, and with a body announced but never sent: 403 at once, before the key is
    // checked and before the body is read.
    let mut conn = tokio::net::TcpStream::connect(gw.admin)
        .await
        .expect("connect");
    conn.write_all(
        b"PUT /apisix/admin/routes/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{",
    )
    .await
    .expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head))
        .await
        .expect("answered without waiting for the body")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 403");

    let allowed = TestGateway::builder()
        .allow_admin(&["10.0.0.0/8", "127.0.0.0/8"])
        .start()
        .await;
    let (status, body) = allowed.admin("GET", "/routes", None).await;
    assert_eq!(status, 200, "{body}");
}
