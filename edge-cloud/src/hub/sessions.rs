//! Who is connected (device id -> live session), what the rest of the edge hands a
//! session, and the recheck that ends a session whose credentials no longer hold.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use fleet_node::commands::Dispatch;
use fleet_node::devices::Presence;
use fleet_store::commands::State;
use fleet_store::{commands, desired_configs, devices};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::Notify;

use super::statuses::Held;
use super::End;

/// Who is connected, and the latest status of each device.
#[derive(Default)]
pub struct Sessions {
    pub(super) live: Arc<DashMap<i64, Live>>,
    pub(super) statuses: DashMap<i64, Held>,
    /// Devices whose status changed since the last write to the database.
    pub(super) dirty: std::sync::Mutex<HashSet<i64>>,
    /// Devices that may have commands or a configuration waiting in the database;
    /// a login of any other device reads nothing there (see [`Sessions::take_waiting`]).
    waiting: DashMap<i64, ()>,
    pub(super) serial: AtomicU64,
    /// Bumped by every recheck. A login that overlapped one (it read the device row
    /// before the change, its session was not live yet when the recheck looked)
    /// checks its row once more when it goes live.
    rechecks: AtomicU64,
    /// The database and runtime rechecks run on, from [`Sessions::restore`].
    backing: OnceLock<(DatabaseConnection, tokio::runtime::Handle)>,
    /// The software version each device's row holds, as this edge last wrote or saw
    /// it: a reported version that differs is written to the row.
    pub(super) software: DashMap<i64, String>,
}

/// What the rest of the edge hands to a live session.
pub(super) enum Outgoing {
    Command(commands::Model),
    Config(desired_configs::Model),
}

pub(super) struct Live {
    pub serial: u64,
    pub mailbox: Arc<Mailbox>,
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

/// Items a session's mailbox holds before offers to it are refused (the command then
/// waits in the database for the session's next login or the sweep).
const MAILBOX_CAP: usize = 16;

/// What the rest of the edge says to one live session: items to send, or the word to
/// end. It is one lock and one `Notify`, and an empty mailbox holds no allocation, so
/// tens of thousands of idle sessions pay next to nothing for it.
#[derive(Default)]
pub(super) struct Mailbox {
    notify: Notify,
    inbox: std::sync::Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    items: Vec<Outgoing>,
    closed: Option<End>,
}

/// What a session finds in its mailbox.
pub(super) enum Mail {
    Close(End),
    Send(Vec<Outgoing>),
}

impl Mailbox {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the session, saying why; the first reason given stands.
    pub fn close(&self, why: End) {
        self.inbox().closed.get_or_insert(why);
        self.notify.notify_one();
    }

    /// Queues an item; false when the session is ending or its mailbox is full.
    fn post(&self, item: Outgoing) -> bool {
        {
            let mut inbox = self.inbox();
            if inbox.closed.is_some() || inbox.items.len() >= MAILBOX_CAP {
                return false;
            }
            inbox.items.push(item);
        }
        self.notify.notify_one();
        true
    }

    /// The word to end if there is one, else everything queued, in order; waits for
    /// either. A post between the look and the wait leaves `notify` a permit, so
    /// nothing is missed, and a wait dropped by the session's `select!` costs nothing.
    pub async fn next(&self) -> Mail {
        loop {
            {
                let mut inbox = self.inbox();
                if let Some(why) = inbox.closed {
                    return Mail::Close(why);
                }
                if !inbox.items.is_empty() {
                    return Mail::Send(std::mem::take(&mut inbox.items));
                }
            }
            self.notify.notified().await;
        }
    }
}

impl Presence for Sessions {
    fn is_online(&self, device: i64) -> bool {
        self.live.contains_key(&device)
    }
}

/// Each offer marks the device as waiting before it looks for a live session, and
/// a session goes live before it takes the mark: whichever comes second sees the
/// other, so nothing offered is missed by both.
impl Dispatch for Sessions {
    fn offer(&self, command: &commands::Model) -> bool {
        self.expect(command.device_id);
        self.live
            .get(&command.device_id)
            .is_some_and(|live| live.mailbox.post(Outgoing::Command(command.clone())))
    }

    fn configure(&self, config: &desired_configs::Model) -> bool {
        self.expect(config.device_id);
        self.live
            .get(&config.device_id)
            .is_some_and(|live| live.mailbox.post(Outgoing::Config(config.clone())))
    }

    fn expect(&self, device: i64) {
        self.waiting.insert(device, ());
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
                l.mailbox.close(End::Unconfirmed);
            }
            return;
        }
    };
    // Judged against the session live now: one opened with the new secret stays.
    if let Some(l) = live.get(&device) {
        if let Some(why) = l.credentials.judge(row.as_ref()) {
            tracing::info!(device, reason = why.reason(), "closing a device session");
            l.mailbox.close(why);
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
        self.restore_waiting(db).await?;
        self.restore_statuses(db).await
    }

    /// Marks every device with an unfinished command or a desired configuration as
    /// waiting, so that its first login after a start looks in the database.
    async fn restore_waiting(&self, db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        let commanded: Vec<i64> = commands::Entity::find()
            .select_only()
            .column(commands::Column::DeviceId)
            .distinct()
            .filter(commands::Column::State.is_in([State::Queued.as_str(), State::Sent.as_str()]))
            .filter(commands::Column::Deleted.eq(false))
            .into_tuple()
            .all(db)
            .await?;
        let configured: Vec<i64> = desired_configs::Entity::find()
            .select_only()
            .column(desired_configs::Column::DeviceId)
            .filter(desired_configs::Column::Deleted.eq(false))
            .into_tuple()
            .all(db)
            .await?;
        for device in commanded.into_iter().chain(configured) {
            self.waiting.insert(device, ());
        }
        Ok(())
    }

    /// Whether a device logging in may have something waiting in the database; the
    /// mark is taken, and the greeting puts it back if something is still owed. Call
    /// only once the device's session is live.
    pub(super) fn take_waiting(&self, device: i64) -> bool {
        self.waiting.remove(&device).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: i64) -> Outgoing {
        Outgoing::Config(desired_configs::Model {
            id: version,
            device_id: 1,
            version,
            report_interval_s: 30,
            settings: "{}".into(),
            created_at: 0,
            updated_at: 0,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        })
    }

    fn versions(mail: Mail) -> Vec<i64> {
        match mail {
            Mail::Send(items) => items
                .into_iter()
                .map(|i| match i {
                    Outgoing::Config(c) => c.version,
                    Outgoing::Command(c) => c.id,
                })
                .collect(),
            Mail::Close(why) => panic!("expected items, got a close: {why:?}"),
        }
    }

    #[tokio::test]
    async fn a_mailbox_hands_over_in_order_and_refuses_past_its_cap() {
        let mailbox = Mailbox::default();
        for v in 0..MAILBOX_CAP {
            assert!(mailbox.post(config(i64::try_from(v).expect("small"))));
        }
        assert!(!mailbox.post(config(99)), "one past the cap is refused");
        let expected: Vec<i64> = (0..16).collect();
        assert_eq!(versions(mailbox.next().await), expected);
        assert!(mailbox.post(config(7)), "taking the items makes room");
        assert_eq!(versions(mailbox.next().await), vec![7]);
    }

    #[tokio::test]
    async fn a_close_goes_before_queued_items_and_later_posts_are_refused() {
        let mailbox = Arc::new(Mailbox::default());
        assert!(mailbox.post(config(1)));
        mailbox.close(End::Revoked);
        mailbox.close(End::Replaced);
        assert!(!mailbox.post(config(2)));
        assert!(matches!(mailbox.next().await, Mail::Close(End::Revoked)));
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_for_a_post() {
        let mailbox = Arc::new(Mailbox::default());
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { versions(mailbox.next().await) }
        });
        tokio::task::yield_now().await;
        assert!(mailbox.post(config(5)));
        assert_eq!(waiting.await.expect("joined"), vec![5]);
    }
}
