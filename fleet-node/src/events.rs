//! The event log of a node: recording what happened (operator actions, device
//! sessions, federation), and retention (events older than `--event-retain-days`
//! are deleted by a background job).

use std::sync::Arc;
use std::time::Duration;

use fleet_store::{events, Replica};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TryIntoModel,
};

use tokio::sync::oneshot;

use crate::Node;

#[derive(Clone)]
pub struct NewEvent {
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub status: u16,
    pub detail: String,
}

fn clip(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect()
    }
}

fn row(replica: &Replica, e: NewEvent) -> events::ActiveModel {
    events::ActiveModel {
        id: Set(replica.new_id()),
        at: Set(fleet_store::now_ms()),
        actor: Set(clip(e.actor, 64)),
        action: Set(clip(e.action, 128)),
        target_type: Set(clip(e.target_type, 32)),
        target_id: Set(clip(e.target_id, 64)),
        outcome: Set(if e.status < 400 { "ok" } else { "error" }.to_string()),
        status_code: Set(i32::from(e.status)),
        detail: Set(clip(e.detail, 1000)),
    }
}

pub async fn record<C: ConnectionTrait>(
    db: &C,
    replica: &Replica,
    e: NewEvent,
) -> Result<(), DbErr> {
    events::Entity::insert(row(replica, e))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Rows one multi-row insert of events carries at most (SQLite caps a statement's
/// parameters, nine to an event).
const ROWS_PER_INSERT: usize = 500;

/// Events recorded through [`Node::record`] or [`Node::record_soon`] and not yet
/// written.
#[derive(Default)]
pub struct Queue {
    pending: std::sync::Mutex<Pending>,
    /// Wakes [`write_soon_forever`] for an event nobody waits for.
    soon: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    /// Each with whoever waits for its commit, if anyone does.
    events: Vec<(NewEvent, Option<oneshot::Sender<bool>>)>,
    /// A writer is at work: what is queued meanwhile goes with its next turn.
    writing: bool,
}

/// How long an event nobody waits for may wait for others to share its commit.
const SOON: Duration = Duration::from_millis(5);

impl Node {
    /// Records an event and answers once it is committed (`false`: writing it failed,
    /// which is logged). Events recorded while a write is under way are written
    /// together in the next one (group commit), so a burst of operator calls costs a
    /// few transactions, not one each.
    pub async fn record(self: &Arc<Self>, event: NewEvent) -> bool {
        let (done, written) = oneshot::channel();
        let lead = {
            let mut pending = self
                .events
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.events.push((event, Some(done)));
            !std::mem::replace(&mut pending.writing, true)
        };
        if lead {
            // In a task of its own: the waiting caller may go away, the others may not.
            tokio::spawn(write_queued(self.clone()));
        }
        written.await.unwrap_or(false)
    }

    /// Records an event nobody waits for (a call's audit when its answer does not
    /// wait for it): it is written within a few milliseconds, with whatever else
    /// came meanwhile, by [`write_soon_forever`], which writes what is left when
    /// the node stops.
    pub fn record_soon(&self, event: NewEvent) {
        self.events
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .push((event, None));
        self.events.soon.notify_one();
    }
}

/// Writes the events of [`Node::record_soon`], a few milliseconds after the first of
/// a burst, until `stop`; then what is still queued.
pub async fn write_soon_forever(node: Arc<Node>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = node.events.soon.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(SOON) => {}
                    () = stop.cancelled() => {}
                }
            }
            () = stop.cancelled() => {}
        }
        let lead = {
            let mut pending = node
                .events
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // A writer at work takes them in its next turn.
            !pending.events.is_empty() && !std::mem::replace(&mut pending.writing, true)
        };
        if lead {
            write_queued(node.clone()).await;
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// Writes what is queued, turn after turn, until nothing is.
async fn write_queued(node: Arc<Node>) {
    loop {
        let batch = {
            let mut pending = node
                .events
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if pending.events.is_empty() {
                pending.writing = false;
                return;
            }
            std::mem::take(&mut pending.events)
        };
        let (events, waiters): (Vec<NewEvent>, Vec<_>) = batch.into_iter().unzip();
        let (events, replica) = (&events, &node.replica);
        let written = node
            .transact(|txn| async move {
                for chunk in events.chunks(ROWS_PER_INSERT) {
                    events::Entity::insert_many(chunk.iter().map(|e| row(replica, e.clone())))
                        .exec_without_returning(&*txn)
                        .await?;
                }
                Ok::<_, DbErr>(())
            })
            .await;
        if let Err(e) = &written {
            tracing::error!(error = %e, events = events.len(), "recording events failed");
        }
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(written.is_ok());
        }
    }
}

/// Records device events in one statement (they come in storms) and queues them for
/// the center, where an edge's device events end up too (docs/design.md §5).
pub async fn record_many<C: ConnectionTrait>(
    db: &C,
    replica: &Replica,
    batch: Vec<NewEvent>,
) -> Result<(), DbErr> {
    if batch.is_empty() {
        return Ok(());
    }
    let rows: Vec<events::ActiveModel> = batch.into_iter().map(|e| row(replica, e)).collect();
    let shipped: Vec<events::Model> = rows
        .iter()
        .filter_map(|r| r.clone().try_into_model().ok())
        .collect();
    events::Entity::insert_many(rows).exec(db).await?;
    events::ship(db, replica, &shipped).await
}

/// Events one retention step deletes: a step is one transaction, holding the node's
/// write queue, so other writers wait at most one step.
pub const EXPIRE_BATCH: u64 = 10_000;
/// How many ids one DELETE names (SQLite and MySQL cap the parameters of a statement).
const DELETE_CHUNK: usize = 1_000;
/// How often the retention job runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// When the first expiry runs after a start.
const EXPIRE_FIRST: Duration = Duration::from_secs(60);

/// Deletes up to `limit` events from before `before_ms`, oldest first; answers how
/// many went. Portable: MySQL cannot take a LIMIT in a DELETE's subquery, and SQLite
/// has no DELETE … LIMIT by default, so the ids are read first.
pub async fn expire_step<C: ConnectionTrait>(
    db: &C,
    before_ms: i64,
    limit: u64,
) -> Result<u64, DbErr> {
    let ids: Vec<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::Id)
        .filter(events::Column::At.lt(before_ms))
        .order_by_asc(events::Column::At)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    let mut gone = 0;
    for chunk in ids.chunks(DELETE_CHUNK) {
        gone += events::Entity::delete_many()
            .filter(events::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(gone)
}

/// Deletes the events older than `retain`, `batch` per write turn so that other
/// writers get in between. Answers how many went.
pub async fn expire(node: &Node, retain: Duration, batch: u64) -> Result<u64, DbErr> {
    let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
    let before_ms = fleet_store::now_ms().saturating_sub(retain_ms);
    let mut total = 0;
    loop {
        let gone = node
            .transact(|txn| async move { expire_step(&*txn, before_ms, batch).await })
            .await?;
        node.metrics.count_events_expired(gone);
        total += gone;
        if gone < batch {
            return Ok(total);
        }
    }
}

/// Applies the event retention a minute after start (a node just started is busy
/// taking its devices back), then every hour, for as long as the process runs.
pub async fn expire_forever(node: Arc<Node>, retain: Duration) {
    let first = tokio::time::Instant::now() + EXPIRE_FIRST;
    let mut tick = tokio::time::interval_at(first, EXPIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match expire(&node, retain, EXPIRE_BATCH).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(events = gone, "deleted events past the retention"),
            Err(e) => tracing::warn!(error = %e, "deleting events past the retention failed"),
        }
    }
}
