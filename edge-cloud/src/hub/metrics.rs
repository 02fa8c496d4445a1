//! What the hub counts, for `/metrics`. Refused and abandoned connections are
//! counted here and nowhere else: a flood of them must not become database rows.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared_proto::southbound::Pdu;

#[derive(Clone, Default)]
pub struct HubMetrics {
    pub(super) sessions: Gauge,
    /// Connections admitted and not yet logged in (the admission gate's own count).
    pub(super) unauthenticated: Gauge,
    logins: Family<OutcomeLabel, Counter>,
    dropped: Family<ReasonLabel, Counter>,
    accept_paused: Counter,
    closed: Family<ReasonLabel, Counter>,
    messages: Family<MessageLabels, Counter>,
    handshakes: Family<KindLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: &'static str,
    kind: &'static str,
}

impl HubMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "device_sessions",
            "Open device sessions",
            self.sessions.clone(),
        );
        registry.register(
            "device_unauthenticated_connections",
            "Device connections accepted and not yet logged in",
            self.unauthenticated.clone(),
        );
        registry.register(
            "device_logins",
            "Device logins by outcome (ok, roamed, refused, unavailable)",
            self.logins.clone(),
        );
        registry.register(
            "device_connections_dropped",
            "Device connections ended before login, by reason (throttled, over_source_cap, \
             deadline, handshake, bad_login)",
            self.dropped.clone(),
        );
        registry.register(
            "device_accepts_paused",
            "Times the device endpoint stopped accepting because the connections not yet \
             logged in reached their total cap (the next ones wait in the listen backlog)",
            self.accept_paused.clone(),
        );
        registry.register(
            "device_sessions_closed",
            "Device sessions the edge closed, by reason (revoked, deleted, moved_away, \
             unconfirmed, replaced, heartbeat_lost, bad_frames)",
            self.closed.clone(),
        );
        registry.register(
            "device_messages",
            "Southbound messages by direction (in, out) and type",
            self.messages.clone(),
        );
        registry.register(
            "device_tls_handshakes",
            "Completed TLS handshakes of device connections by kind (full, resumed)",
            self.handshakes.clone(),
        );
    }

    pub(super) fn handshake(&self, kind: Option<rustls::HandshakeKind>) {
        let kind = match kind {
            Some(rustls::HandshakeKind::Resumed) => "resumed",
            _ => "full",
        };
        self.handshakes.get_or_create(&KindLabel { kind }).inc();
    }

    pub(super) fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(super) fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(super) fn accept_paused(&self) {
        self.accept_paused.inc();
    }

    pub(super) fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(super) fn message(&self, direction: &'static str, pdu: &Pdu) {
        self.messages
            .get_or_create(&MessageLabels {
                direction,
                kind: kind_of(pdu),
            })
            .inc();
    }
}

fn kind_of(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Login(_) => "login",
        Pdu::LoginOk(_) => "login_ok",
        Pdu::Ping(_) => "ping",
        Pdu::Pong(_) => "pong",
        Pdu::StatusReport(_) => "status_report",
        Pdu::StatusAck(_) => "status_ack",
        Pdu::StatusResync(_) => "status_resync",
        Pdu::DesiredConfig(_) => "desired_config",
        Pdu::ConfigApplied(_) => "config_applied",
        Pdu::Command(_) => "command",
        Pdu::CommandProgress(_) => "command_progress",
        Pdu::CommandResult(_) => "command_result",
        Pdu::Error(_) => "error",
    }
}
