//! Who is connected (device id -> live session), what the rest of the edge hands a
//! session, and the recheck that ends a session whose credentials no longer hold.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use fleet_node::commands::Dispatch;
use fleet_node::devices::Presence;
use fleet_store::{commands, desired_configs, devices};
use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::sync::{mpsc, Notify};

use super::statuses::Held;
use super::End;

/// Who is connected, and the latest status of each device.
#[derive(Default)]
pub struct Sessions {
    pub(super) live: Arc<DashMap<i64, Live>>,
    pub(super) statuses: DashMap<i64, Held>,
    /// Devices whose status changed since the last write to the database.
    pub(super) dirty: std::sync::Mutex<HashSet<i64>>,
    pub(super) serial: AtomicU64,
    /// Bumped by every recheck. A login that overlapped one (it read the device row
    /// before the change, its session was not live yet when the recheck looked)
    /// checks its row once more when it goes live.
    rechecks: AtomicU64,
    /// The database and runtime rechecks run on, from [`Sessions::restore`].
    backing: OnceLock<(DatabaseConnection, tokio::runtime::Handle)>,
}

/// What the rest of the edge hands to a live session.
pub(super) enum Outgoing {
    Command(commands::Model),
    Config(desired_configs::Model),
}

pub(super) struct Live {
    pub serial: u64,
    pub close: Arc<Closer>,
    pub outbox: mpsc::Sender<Outgoing>,
    /// What the session logged in with; a row that says otherwise ends it.
    pub credentials: Credentials,
}

/// The parts of a device's row a session's right to exist rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// A fingerprint of the stored secret hash (a rotation changes it), kept small
    /// because every session holds one.
    secret: u64,
    /// The device's home edge as the row said at login.
    edge_id: Option<i64>,
}

impl Credentials {
    pub fn of(row: &devices::Model) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        row.secret_hash.hash(&mut h);
        Self {
            secret: h.finish(),
            edge_id: row.edge_id,
        }
    }

    /// Why a session opened with `self` must end now that the row reads `row`.
    fn judge(self, row: Option<&devices::Model>) -> Option<End> {
        let Some(row) = row.filter(|r| !r.deleted) else {
            return Some(End::Deleted);
        };
        let now = Self::of(row);
        if now.secret != self.secret {
            Some(End::Revoked)
        } else if now.edge_id != self.edge_id {
            Some(End::MovedAway)
        } else {
            None
        }
    }
}

/// Ends one session, saying why.
#[derive(Default)]
pub(super) struct Closer {
    notify: Notify,
    why: OnceLock<End>,
}

impl Closer {
    pub fn close(&self, why: End) {
        let _ = self.why.set(why);
        self.notify.notify_one();
    }

    pub async fn closed(&self) -> End {
        self.notify.notified().await;
        self.why.get().copied().unwrap_or(End::Replaced)
    }
}

impl Presence for Sessions {
    fn is_online(&self, device: i64) -> bool {
        self.live.contains_key(&device)
    }
}

impl Dispatch for Sessions {
    fn offer(&self, command: &commands::Model) -> bool {
        self.live.get(&command.device_id).is_some_and(|live| {
            live.outbox
                .try_send(Outgoing::Command(command.clone()))
                .is_ok()
        })
    }

    fn configure(&self, config: &desired_configs::Model) -> bool {
        self.live.get(&config.device_id).is_some_and(|live| {
            live.outbox
                .try_send(Outgoing::Config(config.clone()))
                .is_ok()
        })
    }

    /// Re-reads the device's row and ends its live session if the row no longer
    /// bears it out: deleted, another secret, or homed at another edge.
    fn recheck(&self, device: i64) {
        self.rechecks.fetch_add(1, Ordering::SeqCst);
        if !self.live.contains_key(&device) {
            return;
        }
        let Some((db, runtime)) = self.backing.get() else {
            return;
        };
        let (db, live) = (db.clone(), self.live.clone());
        runtime.spawn(recheck(db, live, device));
    }
}

async fn recheck(db: DatabaseConnection, live: Arc<DashMap<i64, Live>>, device: i64) {
    let row = match devices::Entity::find_by_id(device).one(&db).await {
        Ok(row) => row,
        Err(e) => {
            // Unable to confirm: close rather than keep what may be revoked. The
            // device logs in again, which checks afresh.
            tracing::warn!(device, error = %e, "a device row could not be re-read; closing its session");
            if let Some(l) = live.get(&device) {
                l.close.close(End::Unconfirmed);
            }
            return;
        }
    };
    // Judged against the session live now: one opened with the new secret stays.
    if let Some(l) = live.get(&device) {
        if let Some(why) = l.credentials.judge(row.as_ref()) {
            tracing::info!(device, reason = why.reason(), "closing a device session");
            l.close.close(why);
        }
    }
}

impl Sessions {
    /// Takes in the statuses stored in the database, so status versions survive a
    /// restart of the edge, and keeps the database for rechecks.
    pub async fn restore(&self, db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        let _ = self
            .backing
            .set((db.clone(), tokio::runtime::Handle::current()));
        self.restore_statuses(db).await
    }

    /// The recheck count now; see [`Sessions::went_live`].
    pub(super) fn rechecks(&self) -> u64 {
        self.rechecks.load(Ordering::SeqCst)
    }

    /// A session just went live after a login that began at recheck count `since`:
    /// if a recheck ran in between, it may have missed this session, so run one.
    pub(super) fn went_live(&self, device: i64, since: u64) {
        if self.rechecks() != since {
            self.recheck(device);
        }
    }

    pub fn online(&self) -> usize {
        self.live.len()
    }

    /// The devices connected now.
    pub fn online_ids(&self) -> HashSet<i64> {
        self.live.iter().map(|e| *e.key()).collect()
    }
}
