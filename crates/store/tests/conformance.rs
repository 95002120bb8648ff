//! The store conformance suite: every backend must pass it.
//!
//! PostgreSQL joins when `MEETHOOK_TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); each test then gets a fresh schema of its own,
//! selected with `options=-csearch_path=…` and dropped at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meethook_proto::Header;
use meethook_store::{Channel, NewEvent, PostgresStore, SqliteStore, Store, StoreError};
use meethook_testkit::fault::Proxy;
use meethook_testkit::pg::{postgres_url, with_search_path, Schema};

/// Where a backend keeps its data for one test; removed on drop.
#[allow(dead_code)]
enum Place {
    Dir(tempfile::TempDir),
    Schema(Schema),
}

/// Every backend to test, each in a fresh location.
async fn backends() -> Vec<(&'static str, Arc<dyn Store>, Place)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let mut all: Vec<(&'static str, Arc<dyn Store>, Place)> =
        vec![("sqlite", Arc::new(sqlite), Place::Dir(dir))];
    if let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await {
        let pg = PostgresStore::connect(&schema.url()).await.unwrap();
        all.push(("postgres", Arc::new(pg), Place::Schema(schema)));
    }
    all
}

fn channel(id: &str) -> Channel {
    Channel {
        id: id.into(),
        token_hash: "h".into(),
        sender_secret: None,
        created_at_ms: 1,
        head: 0,
    }
}

fn event(body: &str, at: i64) -> NewEvent {
    NewEvent {
        received_at_ms: at,
        method: "POST".into(),
        path: "/p?q=1".into(),
        headers: vec![
            Header::new("x-a", "1"),
            Header::new("x-a", Bytes::from_static(b"\xff\x00")),
        ],
        body: Bytes::from(body.to_string()),
    }
}

#[tokio::test]
async fn append_then_read_is_byte_exact() {
    for (name, s, _d) in backends().await {
        s.create_channel(channel("c")).await.unwrap();
        let seq = s.append("c", event("one", 5)).await.unwrap();
        assert_eq!(seq, 1, "{name}");
        let evs = s.read_after("c", 0, 10, 1 << 20).await.unwrap();
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(
            (e.seq, e.received_at_ms, e.method.as_str(), e.path.as_str()),
            (1, 5, "POST", "/p?q=1")
        );
        assert_eq!(
            e.headers,
            event("", 0).headers,
            "{name}: headers in order, raw bytes"
        );
        assert_eq!(e.body, Bytes::from("one"));
        assert!(s.read_after("c", 1, 10, 1 << 20).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_are_gap_free_per_channel_under_concurrency() {
    for (name, s, _d) in backends().await {
        s.create_channel(channel("a")).await.unwrap();
        s.create_channel(channel("b")).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let ch = if t % 2 == 0 { "a" } else { "b" };
                let mut seqs = Vec::new();
                for i in 0..50 {
                    seqs.push((
                        ch,
                        s.append(ch, event(&format!("{t}-{i}"), 0)).await.unwrap(),
                    ));
                }
                seqs
            }));
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        for t in tasks {
            for (ch, seq) in t.await.unwrap() {
                if ch == "a" {
                    a.push(seq)
                } else {
                    b.push(seq)
                }
            }
        }
        a.sort();
        b.sort();
        assert_eq!(a, (1..=400).collect::<Vec<_>>(), "{name}");
        assert_eq!(b, (1..=400).collect::<Vec<_>>(), "{name}");
        let stored = s.read_after("a", 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=400).collect::<Vec<_>>()
        );
        assert_eq!(s.bounds("a").await.unwrap().head, 400);
    }
}

#[tokio::test]
async fn channels_create_list_delete() {
    for (name, s, _d) in backends().await {
        assert!(
            matches!(
                s.append("nope", event("x", 0)).await,
                Err(StoreError::NotFound)
            ),
            "{name}"
        );
        s.create_channel(channel("c")).await.unwrap();
        assert!(matches!(
            s.create_channel(channel("c")).await,
            Err(StoreError::Conflict)
        ));
        s.append("c", event("x", 0)).await.unwrap();
        assert_eq!(s.list_channels().await.unwrap().len(), 1);
        assert_eq!(s.channel("c").await.unwrap().unwrap().head, 1);
        assert!(s.set_token_hash("c", "h2").await.unwrap());
        assert_eq!(s.channel("c").await.unwrap().unwrap().token_hash, "h2");
        assert!(s.delete_channel("c").await.unwrap());
        assert!(!s.delete_channel("c").await.unwrap());
        assert!(s.channel("c").await.unwrap().is_none());
        assert!(matches!(s.bounds("c").await, Err(StoreError::NotFound)));
        // A new channel of the same id starts with an empty history.
        s.create_channel(channel("c")).await.unwrap();
        assert!(s.read_after("c", 0, 10, 1 << 20).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn reads_respect_limit_and_byte_budget() {
    for (name, s, _d) in backends().await {
        s.create_channel(channel("c")).await.unwrap();
        for i in 0..10 {
            s.append("c", event(&"x".repeat(100 + i), 0)).await.unwrap();
        }
        assert_eq!(
            s.read_after("c", 0, 3, usize::MAX).await.unwrap().len(),
            3,
            "{name}"
        );
        let some = s.read_after("c", 0, 10, 250).await.unwrap();
        assert!(
            !some.is_empty() && some.len() < 10,
            "{name}: {}",
            some.len()
        );
        assert_eq!(
            s.read_after("c", 0, 10, 1).await.unwrap().len(),
            1,
            "at least one"
        );
        assert_eq!(
            s.read_after("c", 4, 10, usize::MAX).await.unwrap()[0].seq,
            5
        );
    }
}

#[tokio::test]
async fn prune_keeps_what_a_recent_listener_has_not_acked() {
    let day = 86_400_000i64;
    for (name, s, _d) in backends().await {
        s.create_channel(channel("c")).await.unwrap();
        let now = 100 * day;
        for _ in 0..5 {
            s.append("c", event("old", now - 10 * day)).await.unwrap();
        }
        s.append("c", event("new", now)).await.unwrap();
        // A listener seen recently has acked 2; one seen long ago acked nothing.
        s.ack("c", "recent", 2, now - day).await.unwrap();
        s.ack("c", "recent", 1, now - day).await.unwrap(); // acks never move back
        s.ack("c", "gone", 0, now - 30 * day).await.unwrap();
        let retention = Duration::from_millis(7 * day as u64);
        assert_eq!(s.prune(retention, now).await.unwrap(), 2, "{name}");
        assert_eq!(s.bounds("c").await.unwrap().oldest, 3);
        s.ack("c", "recent", 6, now).await.unwrap();
        assert_eq!(
            s.prune(retention, now).await.unwrap(),
            3,
            "old and acked go"
        );
        let left = s.read_after("c", 0, 10, usize::MAX).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![6],
            "young events stay"
        );
        assert_eq!(
            s.bounds("c").await.unwrap(),
            meethook_store::Bounds { oldest: 6, head: 6 }
        );
        // Seqs continue after pruning; never reused.
        assert_eq!(s.append("c", event("next", now)).await.unwrap(), 7);
    }
}

#[tokio::test]
async fn a_channel_pruned_empty_keeps_its_head_across_a_restart() {
    let day = 86_400_000i64;
    let now = 100 * day;
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.create_channel(channel("c")).await.unwrap();
        s.create_channel(channel("d")).await.unwrap();
        for _ in 0..3 {
            s.append("c", event("old", now - 10 * day)).await.unwrap();
        }
        s.append("d", event("other", now)).await.unwrap();
        s.ack("c", "l", 3, now).await.unwrap();
        assert_eq!(
            s.prune(Duration::from_millis(day as u64), now)
                .await
                .unwrap(),
            3
        );
        assert!(s
            .read_after("c", 0, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.bounds("c").await.unwrap().head, 3);
        assert_eq!(s.channel("c").await.unwrap().unwrap().head, 3);
    }
    // A new process knows the heads only from the database.
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.bounds("c").await.unwrap().head, 3);
    assert_eq!(s.append("c", event("next", now)).await.unwrap(), 4);
    assert_eq!(s.append("d", event("next", now)).await.unwrap(), 2);
    let heads: Vec<(String, u64)> = s
        .list_channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.head))
        .collect();
    assert_eq!(heads, vec![("c".into(), 4), ("d".into(), 2)]);
}

#[tokio::test]
async fn subscribers_are_woken_by_appends() {
    for (name, s, _d) in backends().await {
        s.create_channel(channel("c")).await.unwrap();
        let mut rx = s.subscribe("c");
        s.append("c", event("x", 0)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*rx.borrow(), 1, "{name}");
    }
}

/// Child half of the crash test: writes half a transaction, then dies without committing.
#[test]
#[ignore = "run by crash_mid_transaction_leaves_the_store_consistent"]
fn crash_child() {
    let dir = std::env::var("MEETHOOK_CRASH_DIR").expect("run by the crash test");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = SqliteStore::open(std::path::Path::new(&dir)).unwrap();
        // Acknowledged before the crash: must survive.
        assert_eq!(s.append("c", event("acked", 0)).await.unwrap(), 2);
    });
    let conn = rusqlite::Connection::open(std::path::Path::new(&dir).join("relay.sqlite")).unwrap();
    conn.execute_batch(
        "BEGIN; UPDATE channels SET head_seq = head_seq + 1 WHERE id = 'c';
         INSERT INTO events (id, received_at, method, path, headers, body)
         VALUES (((SELECT num FROM channels WHERE id = 'c') << 40) | 3, 0, 'POST', '', x'0000', x'00');",
    )
    .unwrap();
    std::process::abort();
}

#[tokio::test]
async fn crash_mid_transaction_leaves_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.create_channel(channel("c")).await.unwrap();
        s.append("c", event("first", 0)).await.unwrap();
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture"])
        .env("MEETHOOK_CRASH_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die mid-transaction");
    let s = SqliteStore::open(dir.path()).unwrap();
    let evs = s.read_after("c", 0, 10, usize::MAX).await.unwrap();
    let bodies: Vec<_> = evs.iter().map(|e| e.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![Bytes::from("first"), Bytes::from("acked")],
        "acked kept, half-written gone"
    );
    assert_eq!(
        s.bounds("c").await.unwrap().head,
        2,
        "the uncommitted seq bump rolled back"
    );
    assert_eq!(
        s.append("c", event("after", 0)).await.unwrap(),
        3,
        "no gap after the crash"
    );
}

#[tokio::test]
async fn a_version_1_sqlite_store_is_migrated_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("relay.sqlite")).unwrap();
        // The layout before event ids packed the channel number and the seq.
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE channels (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL,
                 sender_secret TEXT, created_at INTEGER NOT NULL,
                 head_seq INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE events (channel_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 received_at INTEGER NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
                 headers BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (channel_id, seq));
             CREATE INDEX events_received_at ON events (received_at);
             CREATE TABLE listeners (channel_id TEXT NOT NULL, listener_id TEXT NOT NULL,
                 acked_seq INTEGER NOT NULL, last_seen INTEGER NOT NULL,
                 PRIMARY KEY (channel_id, listener_id));
             INSERT INTO channels VALUES ('a', 'h', NULL, 0, 3), ('b', 'h', NULL, 0, 1);
             INSERT INTO events VALUES
                 ('a', 2, 5, 'POST', '/x', x'0000', x'6132'),
                 ('a', 3, 6, 'PUT', '', x'0000', x'6133'),
                 ('b', 1, 7, 'POST', '', x'0000', x'6231');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let a = s.read_after("a", 0, 10, usize::MAX).await.unwrap();
    let got: Vec<_> = a
        .iter()
        .map(|e| (e.seq, e.method.as_str(), e.path.as_str(), e.body.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "POST", "/x", Bytes::from("a2")),
            (3, "PUT", "", Bytes::from("a3"))
        ]
    );
    assert_eq!(
        s.bounds("a").await.unwrap(),
        meethook_store::Bounds { oldest: 2, head: 3 }
    );
    assert_eq!(
        s.read_after("b", 0, 10, usize::MAX).await.unwrap()[0].body,
        Bytes::from("b1")
    );
    assert_eq!(s.append("a", event("a4", 8)).await.unwrap(), 4);
    // A channel created after the migration gets its own id range.
    s.create_channel(channel("c")).await.unwrap();
    assert_eq!(s.append("c", event("c1", 9)).await.unwrap(), 1);
    assert_eq!(s.read_after("c", 0, 10, usize::MAX).await.unwrap().len(), 1);
    assert!(s.delete_channel("a").await.unwrap());
    assert_eq!(
        s.read_after("b", 0, 10, usize::MAX).await.unwrap().len(),
        1,
        "other channels keep their events"
    );
}

/// Files under the SQLite store's body-file directory.
fn body_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("relay-bodies")).unwrap().count()
}

#[tokio::test]
async fn sqlite_big_bodies_live_in_files_that_go_with_their_events() {
    use meethook_disk::bodyfile::BODY_FILE_MIN;
    let day = 86_400_000i64;
    let now = 100 * day;
    let dir = tempfile::tempdir().unwrap();
    let big = |n: u8| {
        let mut e = event("", now - 10 * day);
        e.body = Bytes::from(
            (0..BODY_FILE_MIN + 3)
                .map(|i| (i % 253) as u8 ^ n)
                .collect::<Vec<u8>>(),
        );
        e
    };
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.create_channel(channel("a")).await.unwrap();
        s.create_channel(channel("b")).await.unwrap();
        s.append("a", big(1)).await.unwrap();
        s.append("a", event("", now - 10 * day)).await.unwrap();
        s.append("a", big(2)).await.unwrap();
        s.append("b", big(3)).await.unwrap();
        assert_eq!(body_files(dir.path()), 3, "one file per big body");
        // An append to a missing channel leaves no file behind.
        assert!(matches!(
            s.append("nope", big(4)).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(body_files(dir.path()), 3);
    }
    // A file no row refers to (an append cut short by a crash) is swept at open.
    std::fs::write(
        dir.path().join("relay-bodies").join("00000000000000ff"),
        b"x",
    )
    .unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(body_files(dir.path()), 3, "orphan swept, live files kept");
    // Read back from disk (a new process has no memory tail): byte-identical, empty stays empty.
    let evs = s.read_after("a", 0, 10, usize::MAX).await.unwrap();
    let bodies: Vec<&Bytes> = evs.iter().map(|e| &e.body).collect();
    assert_eq!(bodies, vec![&big(1).body, &Bytes::new(), &big(2).body]);
    // The byte budget counts file bodies too.
    assert_eq!(s.read_after("a", 0, 10, 1).await.unwrap().len(), 1);
    // Pruning and deleting a channel remove their files.
    s.ack("a", "l", 2, now).await.unwrap();
    s.ack("b", "l", 0, now).await.unwrap();
    assert_eq!(
        s.prune(Duration::from_millis(day as u64), now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(body_files(dir.path()), 2);
    assert_eq!(
        s.read_after("a", 0, 10, usize::MAX).await.unwrap()[0].body,
        big(2).body
    );
    assert!(s.delete_channel("b").await.unwrap());
    assert_eq!(body_files(dir.path()), 1);
}

#[test]
fn a_second_relay_on_the_same_sqlite_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();
    let err = SqliteStore::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("another meethook relay"), "{err}");
    drop(first);
    SqliteStore::open(dir.path()).expect("free again once the first is closed");
}

#[test]
fn a_sqlite_store_from_a_newer_meethook_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("relay.sqlite"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("upgrade meethook"), "{err}");
}

// ---- PostgreSQL: several relays on one database ----

/// Two stores on one schema, as two relay nodes would have (connected at once, so their
/// migrations race).
async fn two_nodes(schema: &Schema) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let url = schema.url();
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    (Arc::new(a.unwrap()), Arc::new(b.unwrap()))
}

async fn wait_head(rx: &mut tokio::sync::watch::Receiver<u64>, head: u64) {
    let woke = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| *h >= head))
        .await
        .map(|r| r.is_ok());
    assert_eq!(
        woke,
        Ok(true),
        "head {head} never announced (at {})",
        *rx.borrow()
    );
}

/// What each relay's `relays` row says it streams, sorted by relay.
async fn watching(schema: &Schema) -> Vec<Vec<String>> {
    let rows = schema
        .client()
        .await
        .query("SELECT watching FROM relays ORDER BY id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_count_each_other_and_watch_only_streamed_channels() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let (a, b) = two_nodes(&schema).await;
    meethook_testkit::wait_until("both nodes count two", meethook_testkit::PATIENCE, || {
        a.nodes() == 2 && b.nodes() == 2
    })
    .await;
    a.create_channel(channel("c")).await.unwrap();
    let rx = b.subscribe("c");
    let one_watches_c = |w: &Vec<Vec<String>>| {
        let mut all: Vec<&Vec<String>> = w.iter().collect();
        all.sort();
        all == [&Vec::<String>::new(), &vec!["c".to_string()]]
    };
    let deadline = tokio::time::Instant::now() + meethook_testkit::PATIENCE;
    while !one_watches_c(&watching(&schema).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            watching(&schema).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stream ends: the relay stops watching the channel.
    drop(rx);
    while watching(&schema).await.iter().any(|w| !w.is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            watching(&schema).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
    // A relay gone quiet stops counting after NODE_TTL.
    meethook_testkit::wait_until("b counts itself alone", meethook_testkit::PATIENCE, || {
        b.nodes() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_hand_out_gap_free_seqs() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let (a, b) = two_nodes(&schema).await;
    a.create_channel(channel("c")).await.unwrap();
    b.create_channel(channel("d")).await.unwrap();
    let mut on_b = b.subscribe("c");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..60 {
                let ch = if i % 4 == 3 { "d" } else { "c" };
                let body = format!("{t}-{i}");
                let seq = s.append(ch, event(&body, 0)).await.unwrap();
                got.push((ch, seq, body));
            }
            got
        }));
    }
    let mut acked: Vec<(&str, u64, String)> = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    for (ch, n) in [("c", 360u64), ("d", 120)] {
        let mut seqs: Vec<u64> = acked
            .iter()
            .filter(|(c, ..)| *c == ch)
            .map(|(_, s, _)| *s)
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{ch}: every seq once");
        for s in [&a, &b] {
            let stored = s.read_after(ch, 0, 1000, usize::MAX).await.unwrap();
            assert_eq!(stored.len() as u64, n);
            for e in &stored {
                let (_, _, body) = acked
                    .iter()
                    .find(|(c, seq, _)| *c == ch && *seq == e.seq)
                    .unwrap();
                assert_eq!(e.body, Bytes::from(body.clone()), "{ch} #{}", e.seq);
            }
            assert_eq!(s.bounds(ch).await.unwrap().head, n);
        }
    }
    // Appends on A reached B's subscriber (NOTIFY or the head poll).
    wait_head(&mut on_b, 360).await;
}

#[tokio::test]
async fn postgres_appends_on_one_node_wake_subscribers_on_another() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let (a, b) = two_nodes(&schema).await;
    a.create_channel(channel("c")).await.unwrap();
    let mut rx = b.subscribe("c");
    for want in 1..=3 {
        let started = std::time::Instant::now();
        assert_eq!(a.append("c", event("x", 0)).await.unwrap(), want);
        wait_head(&mut rx, want).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow wake-up: {:?}",
            started.elapsed()
        );
    }
    // A channel deleted on A ends B's subscriptions.
    assert!(a.delete_channel("c").await.unwrap());
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "B's subscriber not closed after delete on A"
    );
}

#[tokio::test]
async fn postgres_migrations_are_idempotent_and_refuse_a_newer_schema() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let url = schema.url();
    let s = PostgresStore::connect(&url).await.unwrap();
    s.create_channel(channel("c")).await.unwrap();
    s.append("c", event("kept", 0)).await.unwrap();
    drop(s);
    let s = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(s.read_after("c", 0, 10, usize::MAX).await.unwrap().len(), 1);
    let client = schema.client().await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM meethook_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=meethook_store::postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    client
        .batch_execute("INSERT INTO meethook_schema (version) VALUES (999)")
        .await
        .unwrap();
    let err = PostgresStore::connect(&url).await.err().expect("refused");
    assert!(err.to_string().contains("upgrade meethook"), "{err}");
}

#[tokio::test]
async fn postgres_connect_errors_name_the_fix_and_hide_the_password() {
    let err = PostgresStore::connect("postgres://meethook:s3cr3tpw@127.0.0.1:1/db")
        .await
        .err()
        .expect("nothing listens on port 1");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot connect to PostgreSQL at 127.0.0.1:1") && msg.contains("--store"),
        "{msg}"
    );
    assert!(!msg.contains("s3cr3tpw"), "password leaked: {msg}");
    let err = PostgresStore::connect("mysql://x:s3cr3tpw@h/db")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("s3cr3tpw"), "{err}");
    let Some(base) = postgres_url("PostgreSQL backend") else {
        return;
    };
    let err = PostgresStore::connect(&with_search_path(&base, "mh_no_such_schema"))
        .await
        .err()
        .expect("missing schema refused");
    assert!(err.to_string().contains("CREATE SCHEMA"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_then_recovers() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let proxy = Proxy::start(vec![schema.server_addr().await]).await;
    let s = PostgresStore::connect(&schema.url_via(proxy.addr))
        .await
        .unwrap();
    let direct = PostgresStore::connect(&schema.url()).await.unwrap();
    s.create_channel(channel("c")).await.unwrap();
    assert_eq!(s.append("c", event("before", 0)).await.unwrap(), 1);
    let mut rx = s.subscribe("c");

    proxy.down();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(30), s.append("c", event("x", 0)))
            .await
            .expect("an outage must fail fast, not hang");
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
    // Never "no such channel" while the database is unreachable (listeners would give up).
    assert!(matches!(
        s.channel("c").await,
        Err(StoreError::Unavailable(_))
    ));
    // Another node still writes meanwhile; this one must catch up after the outage.
    assert_eq!(direct.append("c", event("during", 0)).await.unwrap(), 2);

    proxy.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seq = loop {
        match s.append("c", event("after", 0)).await {
            Ok(seq) => break seq,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(seq, 3, "failed appends took no seq");
    s.ping().await.unwrap();
    // The LISTEN connection came back too: an append on the other node wakes us.
    assert_eq!(direct.append("c", event("later", 0)).await.unwrap(), 4);
    wait_head(&mut rx, 4).await;
    let bodies: Vec<Bytes> = s
        .read_after("c", 0, 10, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.body)
        .collect();
    assert_eq!(
        bodies,
        ["before", "during", "after", "later"].map(Bytes::from)
    );
}

/// A TLS-only PostgreSQL in front of the test server: answers the client's SSLRequest with
/// `S`, does TLS with a certificate for `localhost` from a fresh CA, and forwards the plain
/// protocol to the server. Returns its address and the CA's PEM file.
async fn tls_front(
    upstream: SocketAddr,
    dir: &std::path::Path,
) -> (SocketAddr, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meethook test PostgreSQL CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_path = dir.join("pg-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut req = [0u8; 8];
                if down.read_exact(&mut req).await.is_err()
                    || req != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                {
                    return; // plain text refused: TLS only
                }
                if down.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(down).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, ca_path)
}

#[tokio::test]
async fn postgres_sslmode_require_verifies_the_server() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (front, ca) = tls_front(schema.server_addr().await, dir.path()).await;
    let plain = schema.url_via(front).replace("127.0.0.1", "localhost");
    // Plain text is refused by this server.
    assert!(PostgresStore::connect(&format!("{plain}&sslmode=disable"))
        .await
        .is_err());
    // TLS with a certificate no system CA vouches for is refused, and says what to check.
    let err = PostgresStore::connect(&format!("{plain}&sslmode=require"))
        .await
        .err()
        .expect("unknown CA refused");
    assert!(err.to_string().contains("sslrootcert"), "{err}");
    // With the CA (libpq's spelling), everything works over TLS, LISTEN included.
    let url = format!(
        "{plain}&sslmode=verify-full&sslrootcert={}",
        ca.display().to_string().replace('/', "%2F")
    );
    let s = PostgresStore::connect(&url).await.unwrap();
    let other = PostgresStore::connect(&url).await.unwrap();
    s.create_channel(channel("c")).await.unwrap();
    let mut rx = other.subscribe("c");
    assert_eq!(s.append("c", event("over tls", 0)).await.unwrap(), 1);
    wait_head(&mut rx, 1).await;
    let evs = other.read_after("c", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(evs[0].body, Bytes::from("over tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_event_the_database_rejects_does_not_sink_its_batch() {
    let Some(schema) = Schema::create("mh_conf", "PostgreSQL backend").await else {
        return;
    };
    let s: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url()).await.unwrap());
    s.create_channel(channel("c")).await.unwrap();
    // PostgreSQL text cannot hold NUL (hyper never lets one into a path; this forces the case).
    let mut bad = event("bad", 0);
    bad.path = "/\0".into();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (s, bad) = (s.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            if i == 32 {
                s.append("c", bad).await.map_err(|e| e.to_string())
            } else {
                s.append("c", event(&i.to_string(), 0))
                    .await
                    .map_err(|e| e.to_string())
            }
        }));
    }
    let mut seqs = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match (i, t.await.unwrap()) {
            (32, r) => assert!(r.is_err(), "the bad event is refused: {r:?}"),
            (_, r) => seqs.push(r.unwrap()),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=63).collect::<Vec<_>>(), "the others, gap-free");
    assert_eq!(s.bounds("c").await.unwrap().head, 63);
}
