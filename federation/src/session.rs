//! What both ends run once the link is up: push the local change log from where the
//! peer's merge stands (woken by every local commit, not by a timer), merge what the
//! peer sends in one transaction with the new cursor, acknowledge it, and keep the
//! link alive with heartbeats. A disconnect loses nothing: the receiver's cursor is
//! stored with the merge, and the next link resumes from it.

use std::sync::Arc;
use std::time::Duration;

use fleet_node::Node;
use fleet_store::commands::{self, State};
use fleet_store::sync;
use fleet_store::{
    change_log, desired_configs, devices, link_cursors, link_refusals, memberships, pulled_logs,
};
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::authoring::{self, Author, Refusal, Rule};
use crate::protocol::{Ack, Beat, Changes, LinkPdu, SnapshotEnd, BATCH, MAX_FRAME_BYTES};
use crate::snapshot::Snapshot;
use crate::Scope;
use fleet_store::outbox::Outbox;

/// Bytes of pulled logs one frame carries before the rest wait for the next; a
/// single upload (16 MiB at most, a third more in base64) still fits a frame.
const FRAME_BUDGET: usize = 8 * 1024 * 1024;

/// Missed heartbeat intervals after which the link counts as lost.
const MISSED_LIMIT: u32 = 3;

/// How often cursor bookkeeping goes out: the peer's acknowledgements are stored,
/// and a cursor moved over entries the peer does not get (its own changes coming
/// back) is told to it. Neither carries data: acks only bound change-log compaction
/// and show how far behind the peer is (`pending_to_edge`), and a cursor only spares
/// the peer those entries after a reconnect. Doing either at once would cost a write
/// turn at one end or the other for every frame; losing one in a crash costs a few
/// entries kept or looked at again.
const CURSORS_EVERY: Duration = Duration::from_secs(1);

/// The peer's acknowledgements: the newest heard, and the newest stored.
#[derive(Default)]
struct Acked {
    heard: i64,
    stored: i64,
}

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// One end of a link.
pub struct Link {
    pub node: Arc<Node>,
    /// The peer's node (worker) id: its own changes are never sent back to it.
    pub peer: i64,
    /// What the peer gets of this node's changes.
    pub scope: Scope,
    pub heartbeat: Duration,
    /// At an edge, its own edge id: rows of devices homed elsewhere are dropped here.
    pub home: Option<i64>,
    /// Where frames for the node rather than the sync go: at the center the edge's
    /// live view and roaming requests, at an edge the answers to those requests.
    pub inbox: Option<mpsc::Sender<LinkPdu>>,
    /// At the center, the edge at the other end: what it sends is checked against
    /// the authoring rules (`authoring`) before anything of it is merged.
    pub author: Option<Author>,
    /// Told of every refused change (the center counts them in a metric).
    pub on_refusal: Option<std::sync::Arc<dyn Fn(Rule) + Send + Sync>>,
}

/// What a merge did: the rows it changed, the commands among them, the rules
/// changes were refused by, and the devices the peer wrote to that live elsewhere.
struct Merged {
    touched: Vec<(String, i64)>,
    commands: Vec<commands::Model>,
    refused: Vec<Rule>,
    elsewhere: Vec<i64>,
}

/// A change that was not merged, and why.
struct Refused<'a> {
    change: &'a sync::Change,
    refusal: Refusal,
}

#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("the link was lost: {0}")]
    Lost(String),
    #[error("stopping")]
    Stopped,
    #[error("database: {0}")]
    Database(#[from] DbErr),
}

pub async fn send<S>(ws: &mut WebSocketStream<S>, pdu: &LinkPdu) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(pdu.encode().into()))
        .await
        .map_err(|e| Ended::Lost(e.to_string()))
}

/// The next link PDU (heartbeat-level pings skipped); `None` when the peer went away.
pub async fn recv<S>(ws: &mut WebSocketStream<S>) -> Option<Result<LinkPdu, String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => {
                return Some(LinkPdu::decode(&text).map_err(|e| format!("bad frame: {e}")))
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Binary(_)) => return Some(Err("binary frames are not used".into())),
            Ok(Message::Close(_)) => return None,
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}

impl Link {
    /// Runs the link until it is lost or `shutdown` turns true. `sent` is how far the
    /// peer has merged this node's log. `fast` carries frames to send at once: changes
    /// ahead of the log (the center's command fast path; they come again through the
    /// log) and the edge's live view.
    pub async fn run<S>(
        &self,
        mut ws: WebSocketStream<S>,
        sent: i64,
        mut fast: mpsc::Receiver<LinkPdu>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let sent = match self.snapshot_if_needed(&mut ws, sent).await {
            Ok(sent) => sent,
            Err(e) => return e,
        };
        let mut outbox = Outbox::new(sent);
        let mut beat = tokio::time::interval(self.heartbeat);
        let mut acked = Acked::default();
        let mut cursors = tokio::time::interval(CURSORS_EVERY);
        let mut told = sent;
        let mut heard = Instant::now();
        let changed = self.node.changed.clone();
        loop {
            // Armed before reading the log, so a commit in between still wakes us.
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // One frame a turn, then the peer is heard: both ends push at once under
            // a storm (commands down, their results up), and an end that drained its
            // whole log first would leave the other's frames unread until it was done.
            let more = match self.push(&mut ws, &mut outbox, &mut told).await {
                Ok(more) => more,
                Err(e) => return e,
            };
            tokio::select! {
                biased;
                frame = recv(&mut ws) => {
                    heard = Instant::now();
                    let pdu = match frame {
                        None => return Ended::Lost("closed by the peer".into()),
                        Some(Err(e)) => return Ended::Lost(e),
                        Some(Ok(pdu)) => pdu,
                    };
                    if let LinkPdu::Ack(ack) = pdu {
                        acked.heard = acked.heard.max(ack.upto);
                    } else if let Err(e) = self.take(&mut ws, pdu).await {
                        return e;
                    }
                }
                _ = cursors.tick() => {
                    if let Err(e) = self.store_ack(&mut acked).await {
                        return e;
                    }
                    if outbox.upto() > told {
                        told = outbox.upto();
                        let pdu = LinkPdu::Changes(Changes { changes: Vec::new(), upto: told });
                        if let Err(e) = send(&mut ws, &pdu).await {
                            return e;
                        }
                    }
                }
                _ = beat.tick() => {
                    if heard.elapsed() > self.heartbeat * MISSED_LIMIT {
                        return Ended::Lost("heartbeat lost".into());
                    }
                    let ping = LinkPdu::Ping(Beat { sent_ms: fleet_store::now_ms() });
                    if let Err(e) = send(&mut ws, &ping).await {
                        return e;
                    }
                }
                Some(mut pdu) = fast.recv() => {
                    // The fast frame does not move the peer's cursor past what the
                    // log has really delivered.
                    if let LinkPdu::Changes(batch) = &mut pdu {
                        batch.upto = outbox.upto();
                        told = batch.upto;
                    }
                    if let Err(e) = send(&mut ws, &pdu).await {
                        return e;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = self.store_ack(&mut acked).await;
                    let _ = ws.close(None).await;
                    return Ended::Stopped;
                }
                _ = std::future::ready(()), if more => {}
                _ = &mut notified, if !more => {}
            }
        }
    }

    /// Sends the next batch of the log, with any skipped entries that have
    /// committed since; whether there was anything to send. A batch the peer gets
    /// nothing of is not sent: the cursor moved over it goes out with the next frame
    /// or the next bookkeeping tick. `told` is the cursor the peer last heard.
    async fn push<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        outbox: &mut Outbox,
        told: &mut i64,
    ) -> Result<bool, Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let db = &self.node.db;
        let mut filled = sync::read_at(db, &outbox.gaps()).await?;
        let mut fresh = sync::read_for(db, outbox.sent(), BATCH, self.origins()).await?;
        // Pulled logs carry their upload: a frame takes them while it is under
        // FRAME_BUDGET, at least one entry, and the rest go in the next frame.
        let mut bytes = 0;
        for c in filled.iter_mut().filter(|c| self.sends(c)) {
            bytes += pulled_logs::attach(db, c).await?;
        }
        let mut keep = fresh.len();
        for (i, c) in fresh.iter_mut().enumerate() {
            if bytes > FRAME_BUDGET && i > 0 {
                keep = i;
                break;
            }
            if self.sends(c) {
                bytes += pulled_logs::attach(db, c).await?;
            }
        }
        fresh.truncate(keep);
        let before = outbox.upto();
        outbox.took(
            &fresh.iter().map(|c| c.seq).collect::<Vec<_>>(),
            &filled.iter().map(|c| c.seq).collect::<Vec<_>>(),
            Instant::now(),
        );
        if filled.is_empty() && fresh.is_empty() && outbox.upto() == before {
            return Ok(false);
        }
        let theirs = sync::without_superseded(
            filled
                .into_iter()
                .chain(fresh)
                .filter(|c| self.sends(c))
                .collect(),
        );
        let changes = self.scope.select(&self.node.db, theirs).await?;
        if changes.is_empty() {
            return Ok(true);
        }
        let upto = outbox.upto();
        send(ws, &LinkPdu::Changes(Changes { changes, upto })).await?;
        *told = upto;
        Ok(true)
    }

    /// Whether a change goes to the peer at all: never its own back; and from an edge
    /// only what the edge wrote itself, because the center takes nothing else from
    /// it (what others wrote reaches the center from them).
    fn sends(&self, change: &sync::Change) -> bool {
        self.origins().includes(change)
    }

    fn origins(&self) -> sync::Origins {
        match self.home {
            Some(_) => sync::Origins::Only(self.node.replica.node_id()),
            None => sync::Origins::AllBut(self.peer),
        }
    }

    /// Sends a snapshot when the peer starts from nothing or its cursor fell below
    /// what the log still holds; where the log push goes on from.
    async fn snapshot_if_needed<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        sent: i64,
    ) -> Result<i64, Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let db = &self.node.db;
        // Read first: a write that lands while the rows are read follows by the log.
        let head = sync::head(db).await?;
        let horizon = sync::horizon(db).await?;
        // The peer starts from nothing, fell behind what the log holds, or remembers
        // positions past its end (this database was restored from a backup).
        let needed = sent > head || (head > 0 && (sent == 0 || sent < horizon));
        if !needed {
            return Ok(sent);
        }
        let started = Instant::now();
        tracing::info!(peer = self.peer, from = sent, horizon, "sending a snapshot");
        let mut snapshot = Snapshot::new(self.scope);
        let (mut pages, mut rows) = (0u64, 0usize);
        while let Some(mut changes) = snapshot.next(db).await? {
            changes.retain(|c| self.sends(c));
            rows += changes.len();
            pages += 1;
            send(
                ws,
                &LinkPdu::Changes(Changes {
                    changes,
                    upto: sent,
                }),
            )
            .await?;
            if pages % 50 == 0 {
                tracing::info!(
                    peer = self.peer,
                    pages,
                    changes = rows,
                    "snapshot under way"
                );
            }
        }
        // Read before the list, so the list reflects at least this much of the peer.
        let merged = link_cursors::get(db, self.peer).await?.applied;
        let devices = snapshot.homed(db).await?;
        let end = SnapshotEnd {
            upto: head,
            devices,
            merged,
        };
        send(ws, &LinkPdu::SnapshotEnd(end)).await?;
        tracing::info!(
            peer = self.peer,
            changes = rows,
            ms = started.elapsed().as_millis() as u64,
            "snapshot sent"
        );
        Ok(head)
    }

    /// At an edge, after a snapshot: drops the devices held here that the center no
    /// longer homes here, unless this edge changed them after what the center had
    /// merged when it made the list (a device created here meanwhile is not lost).
    /// Only this edge's own entries count: what it merged from the center is in its
    /// log too, but the center has it already.
    async fn let_go(&self, homed: &[i64], merged: i64) -> Result<(), DbErr> {
        if self.home.is_none() {
            return Ok(());
        }
        let homed: std::collections::HashSet<i64> = homed.iter().copied().collect();
        let homed = &homed;
        let own = self.node.replica.node_id();
        self.node
            .transact(|txn| async move {
                let (horizon, head) = (sync::horizon(&*txn).await?, sync::head(&*txn).await?);
                if merged < horizon || merged > head {
                    // This log no longer holds what came after the center's cursor (it was
                    // compacted), or ends before it (a restore): which devices the center
                    // has seen from here cannot be told, so none is dropped.
                    return Ok::<_, DbErr>(());
                }
                let held: Vec<i64> = devices::Entity::find()
                    .select_only()
                    .column(devices::Column::Id)
                    .into_tuple()
                    .all(&*txn)
                    .await?;
                for device in held.into_iter().filter(|d| !homed.contains(d)) {
                    let pending = change_log::Entity::find()
                        .filter(change_log::Column::TableName.eq("devices"))
                        .filter(change_log::Column::Origin.eq(own))
                        .filter(change_log::Column::RowId.eq(device))
                        .filter(change_log::Column::Seq.gt(merged))
                        .one(&*txn)
                        .await?;
                    if pending.is_none() {
                        drop_device(&*txn, device).await?;
                    }
                }
                Ok(())
            })
            .await?;
        // Dropping a device that left is not in the change log, which the device
        // cache follows.
        self.node.device_cache.forget_all();
        Ok(())
    }

    /// Stores how far the peer acknowledged this node's log, if that moved.
    async fn store_ack(&self, acked: &mut Acked) -> Result<(), Ended> {
        if acked.heard <= acked.stored {
            return Ok(());
        }
        let (peer, upto) = (self.peer, acked.heard);
        self.node
            .transact(|txn| async move { link_cursors::set_acked(&*txn, peer, upto).await })
            .await?;
        acked.stored = upto;
        Ok(())
    }

    async fn take<S>(&self, ws: &mut WebSocketStream<S>, pdu: LinkPdu) -> Result<(), Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match pdu {
            LinkPdu::Changes(batch) => {
                let elsewhere = self.merge(&batch).await?;
                self.tell_homes(ws, &elsewhere).await?;
                send(ws, &LinkPdu::Ack(Ack { upto: batch.upto })).await
            }
            // Gathered by the run loop (`Acked`).
            LinkPdu::Ack(_) => Ok(()),
            LinkPdu::SnapshotEnd(end) => {
                // Exactly, not the larger: after a restore the sender's log is
                // shorter than what this end remembered of it.
                let peer = self.peer;
                self.node
                    .transact(|txn| async move {
                        link_cursors::set_applied(&*txn, peer, end.upto).await
                    })
                    .await?;
                if let Some(homed) = &end.devices {
                    self.let_go(homed, end.merged).await?;
                }
                send(ws, &LinkPdu::Ack(Ack { upto: end.upto })).await
            }
            LinkPdu::Ping(beat) => send(ws, &LinkPdu::Pong(beat)).await,
            LinkPdu::Pong(_) => Ok(()),
            pdu @ (LinkPdu::Live(_) | LinkPdu::Roam(_) | LinkPdu::Roamed(_)) => {
                if let Some(to) = &self.inbox {
                    let _ = to.send(pdu).await;
                }
                Ok(())
            }
            LinkPdu::Hello(_) | LinkPdu::Welcome(_) => {
                Err(Ended::Lost("a second handshake on an open link".into()))
            }
        }
    }

    /// Merges a batch and stores the new cursor in one transaction, then lets the
    /// rest of the node act on what changed. Answers the devices the peer wrote to
    /// that live at another edge.
    pub async fn merge(&self, batch: &Changes) -> Result<Vec<i64>, DbErr> {
        let merged = self
            .node
            .transact(|txn| async move { self.merge_in(&txn, batch).await })
            .await?;
        if let Some(count) = &self.on_refusal {
            for rule in merged.refused {
                count(rule);
            }
        }
        self.changed(&merged.touched, merged.commands).await?;
        Ok(merged.elsewhere)
    }

    /// Tells an edge the home of devices it wrote to that the center homes
    /// elsewhere. It holds a copy whose move it missed (the move and its own write
    /// crossed in two snapshots, say), and nothing else it receives names that
    /// device again. The home goes with the stamp the center holds for it, which
    /// the edge takes: only the center ever moves a device.
    async fn tell_homes<S>(&self, ws: &mut WebSocketStream<S>, ids: &[i64]) -> Result<(), Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(author) = self.author else {
            return Ok(());
        };
        let mut changes = Vec::new();
        for chunk in ids.chunks(500) {
            let rows = devices::Entity::find()
                .filter(devices::Column::Id.is_in(chunk.to_vec()))
                .all(&self.node.db)
                .await?;
            for row in rows.iter().filter(|d| d.edge_id != Some(author.edge)) {
                // The row as its stamps have it; of that, the home alone.
                let home = sync::row_changes(row)?
                    .into_iter()
                    .find(|c| c.fields.contains_key("edge_id"));
                changes.extend(home.map(|mut c| {
                    c.fields.retain(|k, _| k == "edge_id");
                    c
                }));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(
            edge = author.edge,
            devices = changes.len(),
            "told an edge where devices it still holds live now"
        );
        // A cursor of 0 moves nothing at the edge: these rows are not from the log.
        send(ws, &LinkPdu::Changes(Changes { changes, upto: 0 })).await
    }

    /// The merge's transaction: checks, merges, records refusals, drops what left
    /// (at an edge) and stores the cursor. Answers the rows that changed, the
    /// commands among them, and the rules changes were refused by.
    async fn merge_in(&self, txn: &DatabaseTransaction, batch: &Changes) -> Result<Merged, DbErr> {
        let mut refused = Vec::new();
        let mut passed = Vec::with_capacity(batch.changes.len());
        let mut record = authoring::Record::new(txn);
        if self.author.is_some() {
            record.read_ahead(&batch.changes).await?;
        }
        for change in &batch.changes {
            let verdict = match self.author {
                Some(author) => {
                    authoring::check(&record, &self.node.replica, author, change).await?
                }
                None => authoring::clock(&self.node.replica, change),
            };
            match verdict {
                Ok(()) => {
                    record.accept(change);
                    passed.push(change);
                }
                Err(refusal) => refused.push(Refused { change, refusal }),
            }
        }
        drop(record);
        let touched = fleet_store::merge::apply_batch(txn, &self.node.replica, &passed).await?;
        self.record_refusals(txn, &refused).await?;
        // At an edge, a device that left is dropped in the same transaction: a crash
        // between the merge and the drop would keep it here for good.
        if let Some(home) = self.home {
            let merged = ids_of(&touched, "devices");
            for chunk in merged.chunks(500) {
                let gone: Vec<i64> = devices::Entity::find()
                    .select_only()
                    .column(devices::Column::Id)
                    .filter(devices::Column::Id.is_in(chunk.to_vec()))
                    .filter(
                        devices::Column::EdgeId
                            .ne(home)
                            .or(devices::Column::EdgeId.is_null()),
                    )
                    .into_tuple()
                    .all(txn)
                    .await?;
                for id in gone {
                    drop_device(txn, id).await?;
                }
            }
        }
        let cursor = link_cursors::get(txn, self.peer).await?;
        if batch.upto > cursor.applied {
            link_cursors::set_applied(txn, self.peer, batch.upto).await?;
        }
        let commands = commands_of(txn, &touched).await?;
        let mut elsewhere: Vec<i64> = refused.iter().filter_map(|r| r.refusal.elsewhere).collect();
        elsewhere.sort_unstable();
        elsewhere.dedup();
        Ok(Merged {
            touched,
            commands,
            refused: refused.iter().map(|r| r.refusal.rule).collect(),
            elsewhere,
        })
    }

    /// Makes refusals visible, in the merge's transaction: one event each, naming
    /// the peer, table, row and rule, and the peer's running count.
    async fn record_refusals<C: sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        refused: &[Refused<'_>],
    ) -> Result<(), DbErr> {
        if refused.is_empty() {
            return Ok(());
        }
        let actor = match self.author {
            Some(author) => format!("edge:{}", author.edge),
            None => format!("node:{}", self.peer),
        };
        for Refused { change, refusal } in refused {
            tracing::warn!(
                peer = %actor,
                table = %change.table,
                row = change.id,
                rule = refusal.rule.as_str(),
                detail = %refusal.detail,
                "refused a change from a federation peer"
            );
            fleet_node::events::record(
                txn,
                &self.node.replica,
                fleet_node::events::NewEvent {
                    actor: actor.clone(),
                    action: "link.change_refused".into(),
                    target_type: change.table.clone(),
                    target_id: change.id.to_string(),
                    status: 403,
                    detail: format!("rule {}: {}", refusal.rule.as_str(), refusal.detail),
                },
            )
            .await?;
        }
        let last = refused.last().map_or("", |r| r.refusal.rule.as_str());
        link_refusals::add(txn, self.peer, refused.len(), last).await
    }

    /// Reacts to merged rows, a few queries per batch: a finished command wakes
    /// whoever waits for it; queued commands and new desired configurations go to
    /// live device sessions; a changed device is rechecked against its session (new
    /// credentials, a new home or a delete end it).
    async fn changed(
        &self,
        touched: &[(String, i64)],
        merged: Vec<commands::Model>,
    ) -> Result<(), DbErr> {
        let db = &self.node.db;
        // After the commit, so whoever is answered reads the same from here on.
        for c in merged.iter().filter(|c| ended(c)) {
            let _ = self.node.finished.send(c.clone());
        }
        let Some(dispatch) = &self.node.dispatch else {
            return Ok(());
        };
        let (queued, unfinished): (Vec<commands::Model>, Vec<commands::Model>) = merged
            .into_iter()
            .filter(|c| !c.deleted && !ended(c))
            .partition(|c| State::parse(&c.state) == Some(State::Queued));
        for c in &unfinished {
            dispatch.expect(c.device_id);
        }
        if !queued.is_empty() {
            dispatch.offer_many(&queued);
        }
        for chunk in ids_of(touched, "desired_configs").chunks(500) {
            for config in desired_configs::Entity::find()
                .filter(desired_configs::Column::Id.is_in(chunk.to_vec()))
                .all(db)
                .await?
            {
                dispatch.configure(&config);
            }
        }
        for device in ids_of(touched, "devices") {
            dispatch.recheck(device);
        }
        Ok(())
    }
}

/// The commands among merged rows, as the merge left them.
async fn commands_of<C: sea_orm::ConnectionTrait>(
    db: &C,
    touched: &[(String, i64)],
) -> Result<Vec<commands::Model>, DbErr> {
    let mut out = Vec::new();
    for chunk in ids_of(touched, "commands").chunks(500) {
        out.extend(
            commands::Entity::find()
                .filter(commands::Column::Id.is_in(chunk.to_vec()))
                .all(db)
                .await?,
        );
    }
    Ok(out)
}

fn ended(c: &commands::Model) -> bool {
    State::parse(&c.state).is_some_and(State::is_final)
}

/// The ids of the rows of `table` among merged (table, id) pairs.
fn ids_of(touched: &[(String, i64)], table: &str) -> Vec<i64> {
    touched
        .iter()
        .filter(|(t, _)| t == table)
        .map(|(_, id)| *id)
        .collect()
}

/// Removes a device that left this edge, with what hangs on it, without logging: the
/// rows live on at the center and at the device's new home.
async fn drop_device<C: sea_orm::ConnectionTrait>(txn: &C, id: i64) -> Result<(), DbErr> {
    commands::Entity::delete_many()
        .filter(commands::Column::DeviceId.eq(id))
        .exec(txn)
        .await?;
    memberships::Entity::delete_many()
        .filter(memberships::Column::DeviceId.eq(id))
        .exec(txn)
        .await?;
    desired_configs::Entity::delete_many()
        .filter(desired_configs::Column::DeviceId.eq(id))
        .exec(txn)
        .await?;
    devices::Entity::delete_by_id(id).exec(txn).await?;
    tracing::info!(device = id, "device moved to another edge; dropped here");
    Ok(())
}
