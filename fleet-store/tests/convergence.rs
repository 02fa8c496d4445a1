//! Randomized, seeded convergence of change-sync between three databases (a center
//! and two edges linked to it, as in the federation), without the network: creates,
//! field edits, deletes and command state moves on every node while the links carry
//! changes in small batches, drop acknowledgements (so changes arrive twice) and stop.
//! After the links heal, every replicated row is identical on all three nodes, and
//! every field holds the value of the write that should win it (newest stamp, or a
//! command's furthest state): no acknowledged write is lost.
//!
//! `SYNC_SEEDS=N` runs N seeds (default 3); `SYNC_SEED=S` replays one. Runs on
//! MariaDB when `TEST_MYSQL_URL` is set.

use std::collections::BTreeMap;

use fleet_store::commands::State;
use fleet_store::ids::Snowflake;
use fleet_store::replica::Replicated;
use fleet_store::sync::{self, Change};
use fleet_store::{commands, devices, groups, Replica};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, Iterable, QueryOrder, TransactionTrait,
};
use serde_json::{json, Value};

struct Node {
    db: DatabaseConnection,
    replica: Replica,
}

async fn fresh_node(dir: &std::path::Path, worker: i64) -> Node {
    let url = match std::env::var("TEST_MYSQL_URL") {
        Ok(server) => {
            let name = format!("sync_{:016x}", rand::random::<u64>());
            let admin = sea_orm::Database::connect(server.as_str())
                .await
                .expect("MariaDB reachable");
            admin
                .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
                .await
                .expect("create database");
            format!("{}/{name}", server.trim_end_matches('/'))
        }
        Err(_) => format!(
            "sqlite://{}",
            dir.join(format!("node{worker}.db")).display()
        ),
    };
    fleet_store::migrations::Schema::Edge
        .migrate(&url)
        .await
        .expect("schema");
    let db = fleet_store::connect(&url, 2).await.expect("connect");
    Node {
        db,
        replica: Replica::new(Snowflake::new(worker).expect("worker")),
    }
}

/// A field of a row: (table, row id, column).
type FieldKey = (&'static str, i64, String);
/// A write's claim on a field: (rank, stamp) and the value it wrote.
type Claim = ((u8, i64), Value);

/// What each field must end as: the write with the highest (rank, stamp).
#[derive(Default)]
struct Oracle {
    winners: BTreeMap<FieldKey, Claim>,
}

impl Oracle {
    fn wrote<M: Replicated>(&mut self, row: &M, fields: &[&str]) {
        let value = serde_json::to_value(row).expect("json");
        let stamps: BTreeMap<String, i64> =
            serde_json::from_str(row.field_stamps()).expect("stamps");
        // Only what this write set: an unchanged field keeps its older stamp.
        for f in fields
            .iter()
            .filter(|f| stamps.get(**f) == Some(&row.hlc()))
        {
            let v = value[*f].clone();
            let rank = match (M::TABLE.name(), *f) {
                ("commands", "state") => v.as_str().and_then(State::parse).map_or(0, State::rank),
                _ => 0,
            };
            let key = (M::TABLE.name(), row.id(), (*f).to_string());
            let candidate = ((rank, row.hlc()), v);
            match self.winners.get(&key) {
                Some((best, _)) if *best >= candidate.0 => {}
                _ => {
                    self.winners.insert(key, candidate);
                }
            }
        }
    }
}

/// One direction of a link: what the receiver acknowledged of the sender's log.
#[derive(Default, Clone, Copy)]
struct Cursor(i64);

/// Carries up to `limit` changes; with `lose_ack` the receiver applies them but the
/// cursor does not move, so they come again.
async fn pump(from: &Node, to: &Node, cursor: &mut Cursor, limit: u64, lose_ack: bool) -> usize {
    let changes: Vec<Change> = sync::read(&from.db, cursor.0, limit).await.expect("read");
    let Some(last) = changes.last().map(|c| c.seq) else {
        return 0;
    };
    let txn = to.db.begin().await.expect("begin");
    // A node never needs its own writes back; the rest merge as one set.
    let theirs: Vec<&Change> = changes
        .iter()
        .filter(|c| fleet_store::clock::node_of(c.hlc) != to.replica.node_id())
        .collect();
    fleet_store::merge::apply_batch(&txn, &to.replica, &theirs)
        .await
        .expect("apply");
    txn.commit().await.expect("commit");
    if !lose_ack {
        cursor.0 = last;
    }
    changes.len()
}

async fn rows<E>(db: &DatabaseConnection) -> Vec<Value>
where
    E: EntityTrait,
    E::Model: serde::Serialize,
{
    let pk = E::PrimaryKey::iter().next().expect("a primary key");
    E::find()
        .order_by_asc(sea_orm::PrimaryKeyToColumn::into_column(pk))
        .all(db)
        .await
        .expect("rows")
        .into_iter()
        .map(|m| serde_json::to_value(m).expect("json"))
        .collect()
}

async fn live<E>(db: &DatabaseConnection) -> Vec<E::Model>
where
    E: EntityTrait,
    E::Model: Replicated,
{
    E::find()
        .all(db)
        .await
        .expect("rows")
        .into_iter()
        .filter(|m| !m.is_deleted())
        .collect()
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.gen_range(0..items.len())])
}

async fn step(rng: &mut StdRng, node: &Node, oracle: &mut Oracle, serial: &mut u64) {
    *serial += 1;
    let n = *serial;
    let now = fleet_store::now_ms();
    let r = &node.replica;
    let txn = node.db.begin().await.expect("begin");
    match rng.gen_range(0..100) {
        0..=19 => {
            let row = devices::Model {
                id: r.new_id(),
                name: format!("dev-{n}"),
                device_type: "gw".into(),
                hw_model: "m".into(),
                hw_sn: format!("sn-{}-{n}", r.node_id()),
                sw_version: "1.0".into(),
                sw_last_update: String::new(),
                nics: "[]".into(),
                status: "active".into(),
                description: String::new(),
                edge_id: None,
                secret_hash: String::new(),
                live_key: Some(devices::live_key("m", &format!("sn-{}-{n}", r.node_id()))),
                created_at: now,
                updated_at: now,
                hlc: 0,
                origin: 0,
                deleted: false,
                field_stamps: String::new(),
            };
            let saved = r.insert(&txn, row).await.expect("insert");
            oracle.wrote(
                &saved,
                &["name", "description", "sw_version", "deleted", "live_key"],
            );
        }
        20..=54 => {
            let all = live::<devices::Entity>(&node.db).await;
            if let Some(old) = pick(rng, &all) {
                let mut new = old.clone();
                let field = ["name", "description", "sw_version"][rng.gen_range(0..3)];
                let value = format!("{field}-{}-{n}", r.node_id());
                match field {
                    "name" => new.name = value,
                    "description" => new.description = value,
                    _ => new.sw_version = value,
                }
                let saved = r.update(&txn, old, new).await.expect("update");
                oracle.wrote(&saved, &[field]);
            }
        }
        55..=61 => {
            let all = live::<devices::Entity>(&node.db).await;
            if let Some(old) = pick(rng, &all) {
                let mut new = old.clone();
                new.tombstone();
                let saved = r.update(&txn, old, new).await.expect("delete");
                oracle.wrote(&saved, &["deleted", "live_key"]);
            }
        }
        62..=69 => {
            let row = groups::Model {
                id: r.new_id(),
                name: format!("group-{}-{n}", r.node_id()),
                description: String::new(),
                live_name: Some(format!("group-{}-{n}", r.node_id())),
                created_at: now,
                updated_at: now,
                hlc: 0,
                origin: 0,
                deleted: false,
                field_stamps: String::new(),
            };
            let saved = r.insert(&txn, row).await.expect("insert");
            oracle.wrote(&saved, &["name", "description"]);
        }
        70..=74 => {
            let all = live::<groups::Entity>(&node.db).await;
            if let Some(old) = pick(rng, &all) {
                let mut new = old.clone();
                new.description = format!("about-{}-{n}", r.node_id());
                let saved = r.update(&txn, old, new).await.expect("update");
                oracle.wrote(&saved, &["description"]);
            }
        }
        75..=84 => {
            let all = live::<devices::Entity>(&node.db).await;
            if let Some(device) = pick(rng, &all) {
                let row = commands::Model {
                    id: r.new_id(),
                    device_id: device.id,
                    batch_id: None,
                    name: "get_status".into(),
                    args: "{}".into(),
                    state: State::Queued.as_str().into(),
                    progress: 0,
                    timeout_s: 60,
                    deadline_at: now + 60_000,
                    result: None,
                    created_by: format!("node-{}", r.node_id()),
                    created_at: now,
                    updated_at: now,
                    hlc: 0,
                    origin: 0,
                    deleted: false,
                    field_stamps: String::new(),
                };
                let saved = r.insert(&txn, row).await.expect("insert");
                oracle.wrote(&saved, &["state", "result", "progress"]);
            }
        }
        _ => {
            let all = live::<commands::Entity>(&node.db).await;
            if let Some(old) = pick(rng, &all) {
                let current = State::parse(&old.state).unwrap_or(State::Queued);
                let next = State::ALL[rng.gen_range(1..State::ALL.len())];
                if current.may_become(next) {
                    let mut new = old.clone();
                    new.state = next.as_str().into();
                    new.progress = if next.is_final() {
                        100
                    } else {
                        rng.gen_range(0..100)
                    };
                    if next.is_final() {
                        new.result = Some(json!({"by": r.node_id(), "n": n}).to_string());
                    }
                    let saved = r.update(&txn, old, new).await.expect("update");
                    oracle.wrote(&saved, &["state", "progress", "result"]);
                }
            }
        }
    }
    txn.commit().await.expect("commit");
}

async fn run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().expect("dir");
    let nodes = [
        fresh_node(dir.path(), 1).await,
        fresh_node(dir.path(), 2).await,
        fresh_node(dir.path(), 3).await,
    ];
    // Links: center (0) <-> edge (1), center (0) <-> edge (2); a cursor per direction.
    let links = [(0usize, 1usize), (1, 0), (0, 2), (2, 0)];
    let mut cursors = [Cursor::default(); 4];
    let mut up = [true, true];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oracle = Oracle::default();
    let mut serial = 0;
    for _ in 0..steps {
        match rng.gen_range(0..10) {
            0..=5 => {
                let node = &nodes[rng.gen_range(0..3)];
                step(&mut rng, node, &mut oracle, &mut serial).await;
            }
            6 => {
                let edge = rng.gen_range(0..2);
                up[edge] = !up[edge];
            }
            _ => {
                let l = rng.gen_range(0..4);
                let (from, to) = links[l];
                if up[from.max(to) - 1] {
                    let limit = rng.gen_range(1..20);
                    let lose_ack = rng.gen_bool(0.1);
                    pump(&nodes[from], &nodes[to], &mut cursors[l], limit, lose_ack).await;
                }
            }
        }
    }
    // Heal: pump every direction until nothing moves. Merging only accepts newer
    // stamps, so relays die out; a sync that kept echoing would never settle.
    let replay = format!("replay with SYNC_SEED={seed}");
    let mut rounds = 0;
    loop {
        let mut moved = 0;
        for (l, (from, to)) in links.iter().enumerate() {
            moved += pump(&nodes[*from], &nodes[*to], &mut cursors[l], 500, false).await;
        }
        if moved == 0 {
            break;
        }
        rounds += 1;
        assert!(
            rounds < 50,
            "changes still flowing after {rounds} rounds; {replay}"
        );
    }
    for (name, dump) in [("devices", 0), ("device_groups", 1), ("commands", 2)] {
        let mut all = Vec::new();
        for n in &nodes {
            all.push(match dump {
                0 => rows::<devices::Entity>(&n.db).await,
                1 => rows::<groups::Entity>(&n.db).await,
                _ => rows::<commands::Entity>(&n.db).await,
            });
        }
        for edge in [1, 2] {
            assert_eq!(
                all[0].len(),
                all[edge].len(),
                "{name}: row counts differ at edge {edge}; {replay}"
            );
            for (center_row, edge_row) in all[0].iter().zip(&all[edge]) {
                assert_eq!(
                    center_row, edge_row,
                    "{name}: a row differs at edge {edge}; {replay}"
                );
            }
        }
        for row in &all[0] {
            let id = row["id"].as_i64().expect("id");
            for ((table, row_id, field), (_, want)) in &oracle.winners {
                if *table == name && *row_id == id {
                    assert_eq!(
                        &row[field.as_str()],
                        want,
                        "{name} {id} {field}: the winning write was lost; {replay}"
                    );
                }
            }
        }
    }
    let rows_seen = oracle
        .winners
        .keys()
        .map(|(t, id, _)| (*t, *id))
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        rows_seen.len() > 10,
        "the run wrote too little to prove anything; {replay}"
    );
}

#[tokio::test]
async fn three_nodes_converge_whatever_the_links_do() {
    let seeds: Vec<u64> = match std::env::var("SYNC_SEED") {
        Ok(s) => vec![s.parse().expect("SYNC_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SYNC_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3);
            (0..n).map(|i| 0x5eed_0000 + i).collect()
        }
    };
    let steps = std::env::var("SYNC_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    for seed in seeds {
        eprintln!("sync convergence: seed {seed}, {steps} steps");
        run(seed, steps).await;
    }
}

/// A group not written yet, with an id from `replica`.
fn new_group(replica: &Replica, name: &str, description: &str) -> groups::Model {
    let now = fleet_store::now_ms();
    groups::Model {
        id: replica.new_id(),
        name: name.into(),
        description: description.into(),
        live_name: Some(name.into()),
        created_at: now,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    }
}

#[tokio::test]
async fn a_change_applied_twice_or_out_of_order_changes_nothing_more() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (
        fresh_node(dir.path(), 1).await,
        fresh_node(dir.path(), 2).await,
    );
    let group = new_group(&a.replica, "g", "first");
    let created = a.replica.insert(&a.db, group).await.expect("insert");
    let mut renamed = created.clone();
    renamed.description = "second".into();
    a.replica
        .update(&a.db, &created, renamed)
        .await
        .expect("update");
    let changes = sync::read(&a.db, 0, 10).await.expect("read");
    assert_eq!(changes.len(), 2);
    // The update first, then the create, then both again.
    for c in [&changes[1], &changes[0], &changes[1], &changes[0]] {
        sync::apply(&b.db, &b.replica, c).await.expect("apply");
    }
    assert_eq!(
        rows::<groups::Entity>(&a.db).await,
        rows::<groups::Entity>(&b.db).await
    );
    let on_b = groups::Entity::find()
        .one(&b.db)
        .await
        .expect("q")
        .expect("row");
    assert_eq!(
        on_b.description, "second",
        "the older create does not undo the newer edit"
    );
    let after_b = sync::head(&b.db).await.expect("head");
    assert_eq!(after_b, 2, "only the two accepted changes were logged at b");
}

fn device(r: &Replica, sn: &str) -> devices::Model {
    let now = fleet_store::now_ms();
    devices::Model {
        id: r.new_id(),
        name: format!("dev-{sn}"),
        device_type: "gateway".into(),
        hw_model: "m".into(),
        hw_sn: sn.into(),
        sw_version: "1".into(),
        sw_last_update: String::new(),
        nics: "[]".into(),
        status: "active".into(),
        description: String::new(),
        edge_id: None,
        secret_hash: String::new(),
        live_key: Some(devices::live_key("m", sn)),
        created_at: now,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    }
}

async fn holder(node: &Node) -> Vec<(i64, Option<String>)> {
    devices::Entity::find()
        .order_by_asc(devices::Column::Id)
        .all(&node.db)
        .await
        .expect("rows")
        .into_iter()
        .map(|d| (d.id, d.live_key))
        .collect()
}

#[tokio::test]
async fn a_serial_number_registered_on_two_nodes_apart_ends_with_one_holder_everywhere() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b, c) = (
        fresh_node(dir.path(), 1).await,
        fresh_node(dir.path(), 2).await,
        fresh_node(dir.path(), 3).await,
    );
    let first = a
        .replica
        .insert(&a.db, device(&a.replica, "dup"))
        .await
        .expect("insert on a");
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = b
        .replica
        .insert(&b.db, device(&b.replica, "dup"))
        .await
        .expect("insert on b");
    assert!(first.id < second.id);
    // The same membership added on both while apart.
    for n in [&a, &b] {
        fleet_store::memberships::add(&n.db, &n.replica, 77, &[first.id])
            .await
            .expect("membership");
    }
    // a and b swap logs; c hears b first, then a: the order differs per node.
    for (from, to) in [(&a, &b), (&b, &a), (&b, &c), (&a, &c)] {
        pump(from, to, &mut Cursor::default(), 100, false).await;
    }
    let key = Some(devices::live_key("m", "dup"));
    let expected = vec![(first.id, key.clone()), (second.id, None)];
    for n in [&a, &b, &c] {
        assert_eq!(holder(n).await, expected, "the older row holds the key");
    }
    for n in [&b, &c] {
        assert_eq!(
            rows::<devices::Entity>(&a.db).await,
            rows::<devices::Entity>(&n.db).await
        );
        assert_eq!(
            rows::<fleet_store::memberships::Entity>(&a.db).await,
            rows::<fleet_store::memberships::Entity>(&n.db).await
        );
    }
    assert_eq!(
        rows::<fleet_store::memberships::Entity>(&a.db).await.len(),
        1,
        "one membership row, not two clashing on (group, device)"
    );

    // The holder is deleted at c: the other row takes the key over, on every node.
    let held = devices::Entity::find_by_id(first.id)
        .one(&c.db)
        .await
        .expect("q")
        .expect("row");
    let mut gone = held.clone();
    gone.tombstone();
    c.replica.update(&c.db, &held, gone).await.expect("delete");
    for (from, to) in [(&c, &a), (&c, &b)] {
        pump(from, to, &mut Cursor::default(), 100, false).await;
    }
    let expected = vec![(first.id, None), (second.id, key)];
    for n in [&a, &b, &c] {
        assert_eq!(holder(n).await, expected, "the next row took the key over");
    }
}

#[tokio::test]
async fn a_peer_reads_every_position_but_only_the_payloads_it_gets() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (
        fresh_node(dir.path(), 1).await,
        fresh_node(dir.path(), 2).await,
    );
    let group = |replica: &Replica, name: &str| new_group(replica, name, "");
    // a's log: its own write, one merged from b, its own again.
    a.replica
        .insert(&a.db, group(&a.replica, "a1"))
        .await
        .expect("insert");
    b.replica
        .insert(&b.db, group(&b.replica, "b1"))
        .await
        .expect("insert");
    for c in sync::read(&b.db, 0, 10).await.expect("read") {
        sync::apply(&a.db, &a.replica, &c).await.expect("apply");
    }
    a.replica
        .insert(&a.db, group(&a.replica, "a2"))
        .await
        .expect("insert");
    let all = sync::read(&a.db, 0, 10).await.expect("read");
    assert_eq!(all.len(), 3);

    let to_b = sync::read_for(&a.db, 0, 10, sync::Origins::AllBut(2))
        .await
        .expect("read");
    let seqs = |v: &[Change]| v.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&to_b), seqs(&all), "no position is skipped");
    let names: Vec<Option<&Value>> = to_b.iter().map(|c| c.fields.get("name")).collect();
    assert_eq!(
        names,
        [Some(&json!("a1")), None, Some(&json!("a2"))],
        "b's own write comes without its payload"
    );
    assert_eq!(
        to_b.iter()
            .filter(|c| sync::Origins::AllBut(2).includes(c))
            .count(),
        2
    );

    let only_b = sync::read_for(&a.db, 1, 10, sync::Origins::Only(2))
        .await
        .expect("read");
    assert_eq!(seqs(&only_b), seqs(&all[1..]));
    assert_eq!(only_b[0].fields.get("name"), Some(&json!("b1")));
    assert!(only_b[1].fields.is_empty());
}
