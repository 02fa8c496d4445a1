//! Artifacts: upload streamed into the database, signed manifests, downloads with
//! byte ranges, the size cap, and who may do what.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, spawn_with, TestApp};

/// A file of `len` bytes that is not the same in every chunk.
fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn upload(app: &TestApp, token: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, text) = app
        .raw(
            Method::POST,
            &format!("/api/v1/artifacts?{query}"),
            Some(token),
            "application/octet-stream",
            body,
        )
        .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GETs `path` with an optional `Range`; status, headers and the raw body.
async fn download(
    app: &TestApp,
    path: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(&app.admin);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body").to_vec())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    shared_proto::manifest::hex(d.as_ref())
}

#[tokio::test]
async fn an_uploaded_artifact_is_signed_listed_and_downloaded_whole_or_in_ranges() {
    let app = spawn_app().await;
    // Several chunks and a short last one.
    let bytes = file(64_000 * 3 + 1234);
    let (status, body) = upload(
        &app,
        &app.admin,
        "name=gw-firmware&version=2.0.1&models=GW-1,GW-2",
        bytes.clone(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let a = &body["data"];
    let id = a["id"].as_str().expect("id").to_string();
    assert_eq!(a["size"], bytes.len() as u64);
    assert_eq!(a["sha256"], sha256_hex(&bytes));
    assert_eq!(a["models"], serde_json::json!(["GW-1", "GW-2"]));
    assert_eq!(a["device_types"], serde_json::json!([]));

    let (status, key) = app.get("/api/v1/artifacts/signing-key").await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["data"]["algorithm"], "ed25519");
    let manifest = shared_proto::manifest::verify(
        key["data"]["public_key"].as_str().expect("key"),
        a["manifest"].as_str().expect("manifest"),
        a["signature"].as_str().expect("signature"),
    )
    .expect("the manifest verifies with the published key");
    assert_eq!(manifest.id, id);
    assert_eq!(manifest.sha256, sha256_hex(&bytes));
    assert_eq!(manifest.size, bytes.len() as u64);
    assert_eq!(
        (manifest.name.as_str(), manifest.version.as_str()),
        ("gw-firmware", "2.0.1")
    );

    let (status, got) = app.get(&format!("/api/v1/artifacts/{id}")).await;
    assert_eq!((status, &got["data"]["manifest"]), (200, &a["manifest"]));
    let (_, page) = app.get("/api/v1/artifacts?name=gw-firmware").await;
    assert_eq!(page["data"]["total"], 1);
    assert_eq!(page["data"]["items"][0]["id"], id.as_str());

    let content = format!("/api/v1/artifacts/{id}/content");
    let (status, headers, whole) = download(&app, &content, None).await;
    assert_eq!(status, 200);
    assert_eq!(whole, bytes, "the whole file comes back");
    assert_eq!(headers["accept-ranges"], "bytes");
    // A range across a chunk boundary, an open one, and a suffix.
    for (range, first, last) in [
        ("bytes=63990-64009", 63_990, 64_009),
        ("bytes=128000-", 128_000, bytes.len() - 1),
        ("bytes=-100", bytes.len() - 100, bytes.len() - 1),
    ] {
        let (status, headers, part) = download(&app, &content, Some(range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(part, bytes[first..=last], "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {first}-{last}/{}", bytes.len()).as_str()
        );
    }
    let past = format!("bytes={}-", bytes.len());
    let (status, headers, _) = download(&app, &content, Some(&past)).await;
    assert_eq!(status, 416);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );

    let (status, body) = app.delete(&format!("/api/v1/artifacts/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(&format!("/api/v1/artifacts/{id}")).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, _, _) = download(&app, &content, None).await;
    assert_eq!(status, 404);
    let db = app.db().await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let left = fleet_store::artifacts::chunks::Entity::find()
        .count(&db)
        .await
        .expect("count");
    assert_eq!(left, 0, "the chunks went with the artifact");
}

#[tokio::test]
async fn bad_uploads_are_refused_by_field_and_store_nothing() {
    let app = spawn_with(|s| s.artifact_max_bytes = 100_000).await;
    let admin = app.admin.clone();
    for (query, field) in [
        ("version=1.0", "name"),
        ("name=fw", "version"),
        ("name=fw&version=1.0%201", "version"),
        ("name=fw&version=1.0&models=a,,b", "models"),
        ("name=fw&version=1.0&colour=red", "colour"),
    ] {
        let (status, body) = upload(&app, &admin, query, file(10)).await;
        assert_error(status, &body, 400, "INVALID_ARGUMENT", Some(field));
    }
    let (status, body) = upload(&app, &admin, "name=fw&version=1.0", Vec::new()).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("body"));
    let (status, text) = app
        .raw(
            Method::POST,
            "/api/v1/artifacts?name=fw&version=1.0",
            Some(&admin),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    let body: Value = serde_json::from_str(&text).expect("envelope");
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("content-type"));
    let (status, body) = upload(&app, &admin, "name=fw&version=1.0", file(100_001)).await;
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE", Some("body"));
    // A body over the cap that does not say its length first is cut off as it comes.
    let stream = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(file(30_000))));
    let res = app
        .client
        .post(format!(
            "{}/api/v1/artifacts?name=fw&version=1.0",
            app.address
        ))
        .bearer_auth(&admin)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 413);

    let (status, body) = upload(&app, &admin, "name=fw&version=1.0", file(10)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = upload(&app, &admin, "name=fw&version=1.0", file(10)).await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("version"));
    let (_, page) = app.get("/api/v1/artifacts").await;
    assert_eq!(page["data"]["total"], 1, "only the good upload is kept");
    let db = app.db().await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let rows = fleet_store::artifacts::Entity::find()
        .count(&db)
        .await
        .expect("count");
    assert_eq!(rows, 1, "refused uploads left no rows behind");
}

#[tokio::test]
async fn writers_upload_admins_delete_and_viewers_only_read() {
    let app = spawn_app().await;
    let (_, viewer) = app.user("vera", "viewer", &[]).await;
    let (_, operator) = app.user("otto", "operator", &[]).await;
    let (status, body) = upload(&app, &viewer, "name=fw&version=1", file(10)).await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    let (status, body) = upload(&app, &operator, "name=fw&version=1", file(10)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/artifacts/{id}");
    let (status, _) = app.call(Method::GET, &path, Some(&viewer), None).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Method::GET,
            "/api/v1/artifacts/signing-key",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.call(Method::DELETE, &path, Some(&operator), None).await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    let (status, _) = app.call(Method::GET, &path, None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_signing_key_given_as_a_pem_file_signs_and_a_bad_file_stops_the_start() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("dir");
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let path = dir.path().join("signing.pem");
    std::fs::write(&path, pem).expect("write");
    let app = spawn_with(|s| s.artifact_signing_key = Some(path.clone())).await;
    let (_, key) = app.get("/api/v1/artifacts/signing-key").await;
    use ring::signature::KeyPair;
    assert_eq!(
        key["data"]["public_key"],
        base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref())
    );

    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").expect("write");
    let (tmp, node) = crate::helpers::test_settings(center_cloud::config::DEFAULTS).await;
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(tmp.path())
    };
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    settings.artifact_signing_key = Some(bad);
    let refused = center_cloud::Application::build(settings)
        .await
        .err()
        .expect("a bad key file stops the start");
    assert!(
        refused.to_string().contains("artifact_signing_key"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_edge_downloads_with_its_own_credentials_and_nothing_else() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let bytes = file(70_000);
    let (status, body) = upload(&app, &app.admin, "name=fw&version=3", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    let (_, edge) = app
        .post(
            "/api/v1/edges",
            serde_json::json!({"name": "e1", "site": "s"}),
        )
        .await;
    let edge_id = edge["data"]["id"].as_str().expect("id").to_string();
    let secret = edge["data"]["secret"].as_str().expect("secret").to_string();
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let get = |path: String, auth: String, range: Option<&'static str>| {
        let mut req = app
            .client
            .get(format!("{}{path}", app.address))
            .header("authorization", auth);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
    };
    let content = format!("/api/v1/artifacts/{id}/content");
    let res = get(content.clone(), basic(&edge_id, &secret), None)
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.expect("body").to_vec(), bytes);
    let res = get(
        content.clone(),
        basic(&edge_id, &secret),
        Some("bytes=69000-"),
    )
    .await
    .expect("sent");
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(res.bytes().await.expect("body").to_vec(), bytes[69_000..]);
    let res = get(
        format!("/api/v1/artifacts/{id}"),
        basic(&edge_id, &secret),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(res.status().as_u16(), 200);

    for auth in [
        basic(&edge_id, "not-the-secret"),
        basic("12345", &secret),
        "Basic !!!".to_string(),
        basic("not-a-number", &secret),
    ] {
        let res = get(content.clone(), auth.clone(), None)
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), 401, "{auth}");
    }
    // Edge credentials open the artifact reads, nothing else.
    for path in [
        "/api/v1/artifacts".to_string(),
        "/api/v1/devices".to_string(),
    ] {
        let res = get(path.clone(), basic(&edge_id, &secret), None)
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), 401, "{path}");
    }
}

#[tokio::test]
async fn replicas_sign_with_one_key_and_serve_what_another_stored() {
    let a = spawn_app().await;
    let database_url = api_harness::on_second_server(&a.database_url);
    let b = spawn_with(|s| s.node.database_url = database_url).await;
    let (_, key_a) = a.get("/api/v1/artifacts/signing-key").await;
    let (_, key_b) = b.get("/api/v1/artifacts/signing-key").await;
    assert_eq!(key_a["data"]["public_key"], key_b["data"]["public_key"]);
    let bytes = file(150_000);
    let (status, body) = upload(&a, &a.admin, "name=fw&version=9", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    let (status, _, got) = download(&b, &format!("/api/v1/artifacts/{id}/content"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, bytes, "the other replica serves the stored file");
    let (_, at_b) = b.get(&format!("/api/v1/artifacts/{id}")).await;
    shared_proto::manifest::verify(
        key_b["data"]["public_key"].as_str().expect("key"),
        at_b["data"]["manifest"].as_str().expect("manifest"),
        at_b["data"]["signature"].as_str().expect("signature"),
    )
    .expect("one key for every replica");
}

#[tokio::test]
async fn an_upload_cut_short_leaves_nothing_and_abandoned_ones_are_swept() {
    use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};
    let app = spawn_app().await;
    // The client fails mid-body: the center sees the body end early.
    let stream = futures_util::stream::iter(vec![
        Ok(file(200_000)),
        Err(std::io::Error::other("the uploader died")),
    ]);
    let cut = app
        .client
        .post(format!(
            "{}/api/v1/artifacts?name=cut&version=1",
            app.address
        ))
        .bearer_auth(&app.admin)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(cut.is_err() || cut.is_ok_and(|r| r.status().is_client_error()));
    let db = app.db().await;
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = fleet_store::artifacts::Entity::find()
            .count(&db)
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "a cut upload leaves no row");
    let (status, body) = upload(&app, &app.admin, "name=cut&version=1", file(10)).await;
    assert_eq!(status, 201, "the name and version are free again: {body}");

    // An upload whose uploader vanished (not ready, untouched for long) goes; one in
    // progress and the finished one stay.
    let now = fleet_store::now_ms();
    for (id, touched) in [
        (1_i64, now - fleet_store::artifacts::STALE_UPLOAD_MS - 1),
        (2, now),
    ] {
        fleet_store::artifacts::ActiveModel {
            id: Set(id),
            name: Set(format!("partial-{id}")),
            version: Set("1".into()),
            size: Set(64_000),
            sha256: Set(String::new()),
            device_types: Set("[]".into()),
            models: Set("[]".into()),
            manifest: Set(String::new()),
            signature: Set(String::new()),
            ready: Set(false),
            created_at: Set(touched),
            updated_at: Set(touched),
        }
        .insert(&db)
        .await
        .expect("row");
        fleet_store::artifacts::chunks::store(&db, id, 0, vec![file(64_000)])
            .await
            .expect("chunk");
    }
    let swept = fleet_store::artifacts::sweep(&db, now - fleet_store::artifacts::STALE_UPLOAD_MS)
        .await
        .expect("sweep");
    assert_eq!(swept, vec![1]);
    let rows = fleet_store::artifacts::Entity::find()
        .count(&db)
        .await
        .expect("count");
    assert_eq!(rows, 2, "the upload in progress and the finished one stay");
    let chunks_of_1 = fleet_store::artifacts::chunks::read(&db, 1, 0, 10)
        .await
        .expect("read");
    assert!(chunks_of_1.is_empty(), "its chunks went with it");
}
