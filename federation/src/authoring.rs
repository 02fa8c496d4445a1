//! Who may author what (docs/design.md §5 "Trust"). The center is the authority for the
//! fleet; an edge is trusted only for its own site. Every change an edge sends is
//! checked here, at the center, before it is merged: against the table and field it
//! writes, against the center's own record of the row (which edge is its home), and
//! against the sending edge's node id, which its stamps and new ids must carry. A
//! change that fails is refused whole; `docs/security.md` has the table these rules
//! implement.

use fleet_store::clock::{node_of, StampError};
use fleet_store::commands::{self, State};
use fleet_store::ids::worker_of;
use fleet_store::sync::Change;
use fleet_store::{
    desired_configs, devices, events, memberships, pulled_logs, rollout_devices, Replica,
};
use sea_orm::sea_query::{ColumnType, StringLen};
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn,
    QueryFilter,
};
use serde_json::{Map, Value};

/// The edge a link belongs to, as the center registered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Author {
    pub edge: i64,
    /// Its snowflake worker id: the node id in its stamps and new row ids.
    pub node: i64,
}

/// The rule a refused change broke; its name labels the metric and the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Stamped further ahead of the center's wall clock than the configured bound.
    ClockAhead,
    /// Not a valid stamp (zero or negative).
    BadStamp,
    /// Stamped with another node's id.
    ForeignStamp,
    /// A new row whose id another node made (or that does not follow from its fields).
    ForeignId,
    /// The row, or the device it hangs on, is not homed at this edge.
    NotHome,
    /// Sets a device's home edge: moves and roaming are the center's.
    MovesDevice,
    /// Changes what a row belongs to (a command's device, a membership's group).
    ChangesOwner,
    /// Brings a deleted row back.
    Undelete,
    /// A table or field only the center authors.
    CenterOnly,
    /// A value of the wrong type, too long, or out of its bounds.
    BadValue,
    /// An event that names another actor or target than the device it is about.
    ForgedActor,
    /// A table this center does not know.
    UnknownTable,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ClockAhead => "clock_ahead",
            Rule::BadStamp => "bad_stamp",
            Rule::ForeignStamp => "foreign_stamp",
            Rule::ForeignId => "foreign_id",
            Rule::NotHome => "not_home",
            Rule::MovesDevice => "moves_device",
            Rule::ChangesOwner => "changes_owner",
            Rule::Undelete => "undelete",
            Rule::CenterOnly => "center_only",
            Rule::BadValue => "bad_value",
            Rule::ForgedActor => "forged_actor",
            Rule::UnknownTable => "unknown_table",
        }
    }
}

/// Why a change was not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub detail: String,
    /// The device the change was about when the center homes it at another edge or
    /// at none: the edge holds a copy it missed the move of, and is told the home.
    pub elsewhere: Option<i64>,
}

fn refuse(rule: Rule, detail: impl Into<String>) -> Result<Verdict, DbErr> {
    Ok(Err(Refusal {
        rule,
        detail: detail.into(),
        elsewhere: None,
    }))
}

/// A change about a device the center knows but homes away from this edge.
fn homed_elsewhere(device: i64) -> Result<Verdict, DbErr> {
    Ok(Err(Refusal {
        rule: Rule::NotHome,
        detail: format!("device {device}"),
        elsewhere: Some(device),
    }))
}

/// `Ok(())` to merge, or why not.
pub type Verdict = Result<(), Refusal>;

/// Largest desired-configuration version an edge may write: far beyond any real
/// count of edits, far below where `version + 1` could overflow.
pub const MAX_CONFIG_VERSION: i64 = 1 << 48;
/// Largest pulled log, as base64 text (16 MiB of content).
const MAX_UPLOAD_BASE64: usize = (16 * 1024 * 1024 / 3 + 1) * 4;
/// What a MySQL TEXT column holds.
const TEXT_BYTES: usize = 65_535;
/// What a MySQL MEDIUMTEXT column holds.
const MEDIUMTEXT_BYTES: usize = 16 * 1024 * 1024 - 1;

/// The one rule for what the center sends an edge: a stamp the edge's clock takes.
pub fn clock(replica: &Replica, change: &Change) -> Verdict {
    match replica.check_stamp(change.hlc) {
        Ok(()) => Ok(()),
        Err(StampError::Ahead { ahead_ms }) => Err(Refusal {
            rule: Rule::ClockAhead,
            detail: format!("{ahead_ms} ms ahead"),
            elsewhere: None,
        }),
        Err(StampError::Invalid(stamp)) => Err(Refusal {
            rule: Rule::BadStamp,
            detail: stamp.to_string(),
            elsewhere: None,
        }),
    }
}

/// The center's record a batch is judged against: its database, as the merge's
/// transaction sees it, and what the batch changed so far (a batch is merged as a
/// set after it is checked, so a device it creates is not in the database yet when
/// the batch's next change, a command for that device, is checked).
pub struct Record<'a, C> {
    db: &'a C,
    batch: HashMap<(String, i64), Map<String, Value>>,
    /// Rows read ahead for the whole batch (`None`: not in the database).
    stored: HashMap<(String, i64), Option<Map<String, Value>>>,
}

impl<'a, C: ConnectionTrait> Record<'a, C> {
    pub fn new(db: &'a C) -> Self {
        Self {
            db,
            batch: HashMap::new(),
            stored: HashMap::new(),
        }
    }

    /// Reads at once every row the checks of `changes` will look at: their own rows,
    /// the commands and memberships they name, and the devices all of those hang on.
    pub async fn read_ahead(&mut self, changes: &[Change]) -> Result<(), DbErr> {
        let of = |table: &str| -> Vec<i64> {
            changes
                .iter()
                .filter(|c| c.table == table)
                .map(|c| c.id)
                .collect()
        };
        let mut commands_ids = of("commands");
        commands_ids.extend(of("pulled_logs"));
        self.load::<commands::Entity>(commands_ids).await?;
        self.load::<memberships::Entity>(of("memberships")).await?;
        self.load::<rollout_devices::Entity>(of("rollout_devices"))
            .await?;
        let mut device_ids = of("devices");
        device_ids.extend(of("desired_configs"));
        for c in changes {
            device_ids.extend(c.fields.get("device_id").and_then(Value::as_i64));
            if c.table == "events" {
                let target = c.fields.get("target_id").and_then(Value::as_str);
                device_ids.extend(target.and_then(|t| t.parse::<i64>().ok()));
            }
        }
        for row in self.stored.values().flatten() {
            device_ids.extend(row.get("device_id").and_then(Value::as_i64));
        }
        self.load::<devices::Entity>(device_ids).await
    }

    async fn load<E>(&mut self, mut ids: Vec<i64>) -> Result<(), DbErr>
    where
        E: EntityTrait,
        E::Model: serde::Serialize,
    {
        let table = E::default().table_name().to_string();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !self.stored.contains_key(&(table.clone(), *id)));
        let Some(pk) = <E::PrimaryKey as Iterable>::iter().next() else {
            return Ok(());
        };
        let pk = pk.into_column();
        for chunk in ids.chunks(500) {
            for id in chunk {
                self.stored.insert((table.clone(), *id), None);
            }
            for row in E::find()
                .filter(pk.is_in(chunk.to_vec()))
                .all(self.db)
                .await?
            {
                if let Ok(Value::Object(map)) = serde_json::to_value(row) {
                    if let Some(id) = map.get("id").and_then(Value::as_i64) {
                        self.stored.insert((table.clone(), id), Some(map));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a change that passed as part of the record.
    pub fn accept(&mut self, change: &Change) {
        let row = self
            .batch
            .entry((change.table.clone(), change.id))
            .or_default();
        row.extend(change.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// A row as the record holds it: the database's, with what the batch changed.
    async fn row<E>(&self, id: i64) -> Result<Option<Map<String, Value>>, DbErr>
    where
        E: EntityTrait,
        E::Model: serde::Serialize,
        <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: From<i64>,
    {
        let table = E::default().table_name().to_string();
        let stored = match self.stored.get(&(table.clone(), id)) {
            Some(ahead) => ahead.clone(),
            None => match E::find_by_id(id).one(self.db).await? {
                Some(m) => match serde_json::to_value(m) {
                    Ok(Value::Object(map)) => Some(map),
                    _ => None,
                },
                None => None,
            },
        };
        Ok(match (stored, self.batch.get(&(table, id))) {
            (None, None) => None,
            (Some(row), None) => Some(row),
            (stored, Some(changed)) => {
                let mut row = stored.unwrap_or_default();
                row.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
                Some(row)
            }
        })
    }
}

/// Checks a change an edge sent, in the transaction that will merge it, so the
/// center's record it is judged against is the one the merge sees.
pub async fn check<C: ConnectionTrait>(
    db: &Record<'_, C>,
    replica: &Replica,
    author: Author,
    change: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(refusal) = clock(replica, change) {
        return Ok(Err(refusal));
    }
    if node_of(change.hlc) != author.node {
        return refuse(
            Rule::ForeignStamp,
            format!("stamped by node {}", node_of(change.hlc)),
        );
    }
    match change.table.as_str() {
        "devices" => device(db, author, change).await,
        "commands" => command(db, author, change).await,
        "memberships" => membership(db, author, change).await,
        "desired_configs" => desired_config(db, author, change).await,
        "events" => event(db, replica, author, change).await,
        "pulled_logs" => pulled_log(db, author, change).await,
        "rollout_devices" => rollout_device(db, author, change).await,
        "device_groups" => refuse(Rule::CenterOnly, "groups are the center's"),
        "rollouts" => refuse(Rule::CenterOnly, "rollouts are the center's"),
        other => refuse(Rule::UnknownTable, other.to_string()),
    }
}

async fn homed_here<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    device: i64,
) -> Result<Verdict, DbErr> {
    match db.row::<devices::Entity>(device).await? {
        Some(row) if int(&row, "edge_id") == Some(Some(author.edge)) => Ok(Ok(())),
        Some(_) => homed_elsewhere(device),
        None => refuse(Rule::NotHome, format!("device {device}")),
    }
}

fn int(fields: &Map<String, Value>, name: &str) -> Option<Option<i64>> {
    fields.get(name).map(Value::as_i64)
}

/// Every field the table knows has the type and length its column takes, so that
/// nothing an edge sends can fail the merge's transaction (which would stall the link).
fn shaped<E: EntityTrait>(change: &Change) -> Verdict {
    for column in E::Column::iter() {
        let Some(value) = change.fields.get(column.as_str()) else {
            continue;
        };
        let def = column.def();
        let fits = match (value, def.get_column_type()) {
            (Value::Null, _) => def.is_null(),
            (Value::String(s), ColumnType::String(StringLen::N(n))) => {
                u32::try_from(s.chars().count()).is_ok_and(|len| len <= *n)
            }
            (Value::String(s), ColumnType::Text) => s.len() <= TEXT_BYTES,
            (Value::String(s), ColumnType::Custom(name)) if name.to_string() == "MEDIUMTEXT" => {
                s.len() <= MEDIUMTEXT_BYTES
            }
            (Value::Number(n), ColumnType::BigInteger) => n.as_i64().is_some(),
            (Value::Number(n), ColumnType::Integer) => {
                n.as_i64().is_some_and(|v| i32::try_from(v).is_ok())
            }
            (Value::Bool(_), ColumnType::Boolean) => true,
            _ => false,
        };
        if !fits {
            return Err(Refusal {
                rule: Rule::BadValue,
                detail: format!("field {}", column.as_str()),
                elsewhere: None,
            });
        }
    }
    Ok(())
}

fn bounded(
    fields: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Verdict {
    match int(fields, name) {
        Some(Some(v)) if !range.contains(&v) => Err(Refusal {
            rule: Rule::BadValue,
            detail: format!("field {name} out of {}..={}", range.start(), range.end()),
            elsewhere: None,
        }),
        _ => Ok(()),
    }
}

/// Devices: a site authors its own devices' description, identity and credentials,
/// and may delete them; their home is the center's alone.
async fn device<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(r) = shaped::<devices::Entity>(c) {
        return Ok(Err(r));
    }
    let home = int(&c.fields, "edge_id");
    match db.row::<devices::Entity>(c.id).await? {
        Some(row) => {
            if int(&row, "edge_id") != Some(Some(author.edge)) {
                return homed_elsewhere(c.id);
            }
            if home.is_some_and(|h| h != Some(author.edge)) {
                return refuse(Rule::MovesDevice, format!("device {}", c.id));
            }
            let deleted = row.get("deleted") == Some(&Value::Bool(true));
            if deleted && c.fields.get("deleted") == Some(&Value::Bool(false)) {
                return refuse(Rule::Undelete, format!("device {}", c.id));
            }
        }
        None => {
            if worker_of(c.id) != author.node {
                return refuse(Rule::ForeignId, format!("device {}", c.id));
            }
            if home != Some(Some(author.edge)) {
                return refuse(Rule::NotHome, format!("new device {}", c.id));
            }
        }
    }
    Ok(Ok(()))
}

/// Commands: a site creates and advances commands of its own devices; a command
/// never changes device, and its counters stay within their bounds.
async fn command<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(r) = shaped::<commands::Entity>(c)
        .and_then(|()| bounded(&c.fields, "progress", 0..=100))
        .and_then(|()| {
            bounded(
                &c.fields,
                "timeout_s",
                0..=fleet_node::commands::MAX_TIMEOUT_S as i64,
            )
        })
    {
        return Ok(Err(r));
    }
    if let Some(state) = c.fields.get("state") {
        if state.as_str().and_then(State::parse).is_none() {
            return refuse(Rule::BadValue, "field state");
        }
    }
    let named = int(&c.fields, "device_id");
    let device = match db.row::<commands::Entity>(c.id).await? {
        Some(row) => {
            let owner = int(&row, "device_id").flatten().unwrap_or_default();
            if named.is_some_and(|d| d != Some(owner)) {
                return refuse(Rule::ChangesOwner, format!("command {}", c.id));
            }
            owner
        }
        None => {
            if worker_of(c.id) != author.node {
                return refuse(Rule::ForeignId, format!("command {}", c.id));
            }
            match named {
                Some(Some(device)) => device,
                _ => return refuse(Rule::BadValue, "a new command names no device"),
            }
        }
    };
    homed_here(db, author, device).await
}

/// Memberships: a site puts its own devices in groups and takes them out; a
/// membership's id follows from (group, device), which never change.
async fn membership<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(r) = shaped::<memberships::Entity>(c) {
        return Ok(Err(r));
    }
    let (group, device) = (int(&c.fields, "group_id"), int(&c.fields, "device_id"));
    let device = match db.row::<memberships::Entity>(c.id).await? {
        Some(row) => {
            let (was_group, was_device) = (int(&row, "group_id"), int(&row, "device_id"));
            let moved = group.is_some_and(|g| Some(g) != was_group)
                || device.is_some_and(|d| Some(d) != was_device);
            if moved {
                return refuse(Rule::ChangesOwner, format!("membership {}", c.id));
            }
            was_device.flatten().unwrap_or_default()
        }
        None => match (group, device) {
            (Some(Some(g)), Some(Some(d))) if memberships::id_for(g, d) == c.id => d,
            _ => return refuse(Rule::ForeignId, format!("membership {}", c.id)),
        },
    };
    homed_here(db, author, device).await
}

/// Desired configurations: a site configures its own devices; the row's id is its
/// device's, and the version stays far from overflowing.
async fn desired_config<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(r) = shaped::<desired_configs::Entity>(c)
        .and_then(|()| bounded(&c.fields, "version", 0..=MAX_CONFIG_VERSION))
        .and_then(|()| bounded(&c.fields, "report_interval_s", 1..=86_400))
    {
        return Ok(Err(r));
    }
    if int(&c.fields, "device_id").is_some_and(|d| d != Some(c.id)) {
        return refuse(Rule::ChangesOwner, format!("desired config {}", c.id));
    }
    homed_here(db, author, c.id).await
}

/// Events: a site ships what its own devices did (`device:<id>` acting on itself),
/// made there (its worker id) and not dated in the future.
async fn event<C: ConnectionTrait>(
    db: &Record<'_, C>,
    replica: &Replica,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if worker_of(c.id) != author.node {
        return refuse(Rule::ForeignId, format!("event {}", c.id));
    }
    let Ok(row) = serde_json::from_value::<events::Model>(Value::Object(c.fields.clone())) else {
        return refuse(Rule::BadValue, format!("event {}", c.id));
    };
    if let Err(r) = shaped::<events::Entity>(c) {
        return Ok(Err(r));
    }
    if row.id != c.id
        || replica
            .check_stamp(fleet_store::clock::stamp_at(row.at, author.node))
            .is_err()
    {
        return refuse(Rule::BadValue, format!("event {}", c.id));
    }
    let Ok(device) = row.target_id.parse::<i64>() else {
        return refuse(Rule::ForgedActor, format!("event {} target", c.id));
    };
    if row.target_type != "devices" || row.actor != format!("device:{device}") {
        return refuse(Rule::ForgedActor, format!("event {}", c.id));
    }
    homed_here(db, author, device).await
}

/// Pulled logs: uploads for the `pull_logs` commands of a site's own devices.
async fn pulled_log<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    let Some(command) = db.row::<commands::Entity>(c.id).await? else {
        return refuse(Rule::NotHome, format!("no command {}", c.id));
    };
    let owner = int(&command, "device_id").flatten().unwrap_or_default();
    let pulls = command.get("name").and_then(Value::as_str) == Some("pull_logs");
    if !pulls || int(&c.fields, "device_id") != Some(Some(owner)) {
        return refuse(Rule::ChangesOwner, format!("pulled log {}", c.id));
    }
    let content = c.fields.get("content").and_then(Value::as_str);
    let bytes = int(&c.fields, "bytes").flatten();
    let decoded = content
        .filter(|text| text.len() <= MAX_UPLOAD_BASE64)
        .and_then(|text| pulled_logs::decode(text).ok());
    let whole = matches!((decoded, bytes), (Some(content), Some(bytes))
        if i64::try_from(content.len()).is_ok_and(|len| len == bytes));
    if !whole || int(&c.fields, "uploaded_at").flatten().is_none() {
        return refuse(Rule::BadValue, format!("pulled log {}", c.id));
    }
    homed_here(db, author, owner).await
}

/// What a site may write of a rollout update: how the install goes on its device.
const ROLLOUT_PROGRESS: [&str; 8] = [
    "state",
    "progress",
    "reason",
    "log",
    "command_id",
    "started_at",
    "finished_at",
    "updated_at",
];

/// Rollout updates: the center makes them; a site moves those of its own devices
/// along (state, progress, reason, log, its install command), nothing else.
async fn rollout_device<C: ConnectionTrait>(
    db: &Record<'_, C>,
    author: Author,
    c: &Change,
) -> Result<Verdict, DbErr> {
    if let Err(r) =
        shaped::<rollout_devices::Entity>(c).and_then(|()| bounded(&c.fields, "progress", 0..=100))
    {
        return Ok(Err(r));
    }
    if let Some(field) = c
        .fields
        .keys()
        .find(|k| !ROLLOUT_PROGRESS.contains(&k.as_str()))
    {
        return refuse(Rule::CenterOnly, format!("rollout update field {field}"));
    }
    if let Some(state) = c.fields.get("state") {
        if state
            .as_str()
            .and_then(rollout_devices::State::parse)
            .is_none()
        {
            return refuse(Rule::BadValue, "field state");
        }
    }
    let Some(row) = db.row::<rollout_devices::Entity>(c.id).await? else {
        return refuse(Rule::ForeignId, format!("rollout update {}", c.id));
    };
    let device = int(&row, "device_id").flatten().unwrap_or_default();
    homed_here(db, author, device).await
}
