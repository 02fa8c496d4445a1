//! An edge per test, through the shared API harness, and a device client that speaks
//! the southbound protocol over WSS.

use std::sync::Arc;
use std::time::Duration;

pub use api_harness::*;
use edge_cloud::{Application, Settings};
use futures_util::{SinkExt, StreamExt};
use shared_proto::southbound::{Envelope, Login, Pdu};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub struct TestEdge {
    pub api: TestApp,
    pub device_port: u16,
    pub sessions: Arc<edge_cloud::hub::Sessions>,
    pub hub: Arc<edge_cloud::hub::Hub>,
    pub node: std::sync::Arc<fleet_node::Node>,
}

pub async fn spawn_edge() -> TestEdge {
    spawn_edge_with(|_| {}).await
}

pub async fn spawn_edge_with(tweak: impl FnOnce(&mut Settings)) -> TestEdge {
    let (dir, node) = test_settings(edge_cloud::config::DEFAULTS).await;
    let mut settings = Settings {
        node,
        ..Settings::with_data_dir(dir.path())
    };
    settings.device_listen = "127.0.0.1:0".parse().expect("addr");
    tweak(&mut settings);
    let database_url = settings.node.database_url.clone();
    let edge = Application::build(settings).await.expect("edge starts");
    let device_port = edge.device_port;
    let sessions = edge.sessions.clone();
    let hub = edge.hub.clone();
    let node = edge.served.node.clone();
    let api = start(edge.served, dir, database_url).await;
    TestEdge {
        api,
        device_port,
        sessions,
        hub,
        node,
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A device's side of one WSS session.
pub struct DeviceClient {
    ws: tokio_tungstenite::WebSocketStream<Tls>,
    next_id: u64,
}

impl DeviceClient {
    pub async fn connect(edge: &TestEdge) -> Self {
        Self::connect_to(&edge.api.data_dir.join("tls/ca.crt"), edge.device_port).await
    }

    /// A session to the device endpoint on `port`, trusting the CA in `ca`.
    pub async fn connect_to(ca: &std::path::Path, port: u16) -> Self {
        let pem = std::fs::read(ca).expect("dev CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.expect("pem")).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("tls");
        let url = format!("wss://localhost:{port}/devices");
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .expect("websocket");
        Self { ws, next_id: 1 }
    }

    pub async fn send(&mut self, pdu: Pdu) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(Envelope::new(id, pdu).encode()).await;
        id
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next PDU, skipping the edge's heartbeat pings; `None` when the edge closed.
    pub async fn recv(&mut self) -> Option<Envelope> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("an answer within 10 s");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let env = Envelope::decode(&t).expect("the edge sends valid PDUs");
                    if matches!(env.pdu, Pdu::Ping(_)) {
                        continue;
                    }
                    return Some(env);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Reads on until the edge closes the session; the close frame it sent, if any.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("the edge closes within 10 s");
            match frame {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    pub async fn login(edge: &TestEdge, device_id: &str, secret: &str) -> (Self, Envelope) {
        let mut c = Self::connect(edge).await;
        c.send(Pdu::Login(Login {
            device_id: Some(device_id.into()),
            sn: None,
            model: None,
            secret: secret.into(),
            agent_version: "test".into(),
        }))
        .await;
        let answer = c.recv().await.expect("login answered");
        (c, answer)
    }
}

impl TestEdge {
    /// The edge's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.api.metrics().await
    }

    /// A counter or gauge from `/metrics` by its full line prefix (name and labels);
    /// 0 when it has not been created yet.
    pub async fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

impl DeviceClient {
    /// The WebSocket itself, for frames the protocol would not send.
    pub fn ws_mut(&mut self) -> &mut tokio_tungstenite::WebSocketStream<Tls> {
        &mut self.ws
    }

    /// Waits up to `secs` seconds for the edge to close this session, skipping what
    /// it sends meanwhile; true when it closed.
    pub async fn closed_within(&mut self, secs: u64) -> bool {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => return false,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}

/// Polls `check` until it holds, for up to `secs` seconds.
pub async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}
