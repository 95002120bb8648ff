//! Several relay processes sharing one PostgreSQL database: senders spraying every node, a
//! listener moving between nodes, a node killed with `kill -9`, the database going away under
//! load. The promise is checked after each (every acknowledged event delivered, once, in seq
//! order).
//!
//! Needs `MEETHOOK_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it the PostgreSQL tests print a note and pass. Each test works in a schema of its own
//! (`options=-csearch_path=…`), dropped at the end. The shared server is never restarted: an
//! outage is a proxy in front of it going down.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meethook_testkit::fault::{collect, spray, verify, wait_all, Proxy};
use meethook_testkit::pg::Schema;
use meethook_testkit::{
    client, request, tempdir, wait_for, RelayProcess, TestDaemon, TestHandler, PATIENCE,
};

use crate::util::BIN;

const ADMIN: &str = "admin-test-token";

// ---- PostgreSQL: one schema per test ----

async fn schema() -> Option<Schema> {
    Schema::create("mh_multi", "multi-node PostgreSQL test").await
}

/// The channel's counter as stored.
async fn head(schema: &Schema, channel: &str) -> u64 {
    let row = schema
        .client()
        .await
        .query_one("SELECT head_seq FROM channels WHERE id = $1", &[&channel])
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

// ---- relay processes on PostgreSQL ----

/// `meethook relay --store URL` as a child, with a data directory of its own; its log tail is
/// printed if the test fails.
struct PgRelay {
    relay: RelayProcess,
    _data: tempfile::TempDir,
}

impl PgRelay {
    async fn start(store: &str, listen: &str) -> PgRelay {
        PgRelay::start_with(store, listen, &["--rate-limit", "0"]).await
    }

    /// [`PgRelay::start`] with `extra` flags.
    async fn start_with(store: &str, listen: &str, extra: &[&str]) -> PgRelay {
        let data = tempdir();
        let mut args = vec!["--store", store];
        args.extend_from_slice(extra);
        let relay =
            RelayProcess::start_logged(Path::new(BIN), data.path(), listen, ADMIN, &args).await;
        PgRelay { relay, _data: data }
    }

    /// Two relays on `store`, started together: their migrations race on a fresh schema.
    async fn two(store: &str) -> (PgRelay, PgRelay) {
        tokio::join!(
            PgRelay::start(store, "127.0.0.1:0"),
            PgRelay::start(store, "127.0.0.1:0")
        )
    }
}

impl std::ops::Deref for PgRelay {
    type Target = RelayProcess;
    fn deref(&self) -> &RelayProcess {
        &self.relay
    }
}

impl std::ops::DerefMut for PgRelay {
    fn deref_mut(&mut self) -> &mut RelayProcess {
        &mut self.relay
    }
}

/// Every stored event (acknowledged or not: a relay may die between COMMIT and its answer)
/// was delivered exactly once, in order: the handler saw exactly 1..=head.
async fn assert_exactly_the_stored_seqs(
    schema: &Schema,
    channel: &str,
    handler: &TestHandler,
) -> u64 {
    let head = head(schema, channel).await;
    let got = handler.wait_delivered(head as usize).await;
    let seqs: Vec<u64> = got
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.seq())
        .collect();
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "the handler sees every stored seq once, in order, no gaps"
    );
    head
}

// ---- the scenarios ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_a_database_while_the_listener_moves_and_one_dies() {
    let Some(schema) = schema().await else {
        return;
    };
    let (mut a, b) = PgRelay::two(&schema.url()).await;
    let (ch, token) = meethook_testkit::create_channel(&a.url(), ADMIN).await;
    let handler = TestHandler::start().await;
    let jdir = tempdir();
    let on = |relay: &PgRelay| {
        TestDaemon::start(TestDaemon::config(
            &relay.url(),
            &ch,
            &token,
            &handler.url("/"),
            jdir.path(),
        ))
    };
    let daemon = on(&a);
    let unavailable = Arc::new(AtomicUsize::new(0));
    let load = spray(
        vec![a.hook(&ch), b.hook(&ch)],
        8,
        80,
        Duration::from_millis(10),
        unavailable,
    );

    handler.wait_delivered(120).await;
    // The listener moves to B mid-stream, with its journal.
    daemon.stop().await.unwrap();
    let daemon = on(&b);
    handler.wait_delivered(300).await;
    // A dies under load; its senders fail over to B.
    assert!(load.iter().any(|t| !t.is_finished()), "still under load");
    a.proc.kill9().await;

    let acked = collect(load).await;
    assert_eq!(acked.len(), 8 * 80);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("pg-two-relays-move-kill9", 1);
    assert_eq!(report.duplicates, 0, "moving a listener duplicates nothing");
    let head = assert_exactly_the_stored_seqs(&schema, &ch, &handler).await;
    assert!(head >= acked.len() as u64);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_behind_a_balancer_survives_the_kill9_of_its_relay() {
    let Some(schema) = schema().await else {
        return;
    };
    let (mut a, b) = PgRelay::two(&schema.url()).await;
    // The balancer prefers A, so the listener and most senders start there.
    let lb = Proxy::start(vec![a.addr, b.addr]).await;
    let lb_url = format!("http://{}", lb.addr);
    let (ch, _, handler, _jdir, daemon) = meethook_testkit::listening_to(&lb_url, ADMIN).await;
    let unavailable = Arc::new(AtomicUsize::new(0));
    let hooks = vec![
        format!("{lb_url}/hooks/{ch}"),
        format!("{lb_url}/hooks/{ch}"),
        b.hook(&ch),
    ];
    let load = spray(hooks, 8, 60, Duration::from_millis(10), unavailable);
    handler.wait_delivered(100).await;
    assert!(load.iter().any(|t| !t.is_finished()), "still under load");
    a.proc.kill9().await;

    let acked = collect(load).await;
    assert_eq!(acked.len(), 8 * 60);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("pg-listener-relay-kill9", 1);
    assert_eq!(
        report.duplicates, 0,
        "a relay crash never duplicates at the handler"
    );
    assert_exactly_the_stored_seqs(&schema, &ch, &handler).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_is_503_then_recovers_without_a_restart() {
    let Some(schema) = schema().await else {
        return;
    };
    let db = Proxy::start(vec![schema.server_addr().await]).await;
    let url = schema.url_via(db.addr);
    let (a, b) = PgRelay::two(&url).await;
    let (ch, token) = meethook_testkit::create_channel(&a.url(), ADMIN).await;
    let handler = TestHandler::start().await;
    let jdir = tempdir();
    let daemon = TestDaemon::start(TestDaemon::config(
        &b.url(),
        &ch,
        &token,
        &handler.url("/"),
        jdir.path(),
    ));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let load = spray(
        vec![a.hook(&ch), b.hook(&ch)],
        8,
        60,
        Duration::from_millis(10),
        unavailable.clone(),
    );
    handler.wait_delivered(80).await;
    assert!(load.iter().any(|t| !t.is_finished()), "still under load");

    db.down();
    let c = client();
    for relay in [&a, &b] {
        let r = request(&c, "POST", &relay.hook(&ch), &[], "probe")
            .await
            .expect("the relay still answers while its database is down");
        assert_eq!(r.status, 503, "{:?}", r.body);
        let r = request(&c, "GET", &format!("{}/healthz", relay.url()), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 503, "healthz while the database is down");
    }
    // A fixed wait, on purpose: the outage lasts a while under load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = unavailable.load(Ordering::Relaxed);
    assert!(during > 0, "senders saw 503s during the outage");
    db.up();

    let acked = collect(load).await;
    assert_eq!(acked.len(), 8 * 60);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("pg-outage", 1);
    assert_eq!(report.duplicates, 0);
    assert_exactly_the_stored_seqs(&schema, &ch, &handler).await;
    for relay in [&a, &b] {
        let r = request(&c, "GET", &format!("{}/healthz", relay.url()), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "healthy again without a restart");
    }
    daemon.stop().await.unwrap();
}

/// `meethook relay --store STORE EXTRA…`, which must exit 1 before listening: its stderr.
async fn relay_that_fails(store: &str, extra: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0", "--store", store])
        .args(extra)
        .arg("--data")
        .arg(tempdir().path().join("unused"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

#[tokio::test]
async fn a_bad_store_url_fails_with_the_fix_and_no_password() {
    let store = "postgres://meethook:s3cr3t-pw@127.0.0.1:1/meethook";
    let err = relay_that_fails(store, &["--store-wait", "1s"]).await;
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1")
            && err.contains("is it running? check --store")
            && err.contains("retrying for up to")
            && err.contains("gave up after --store-wait 1s"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-pw"), "password leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_before_its_database_waits_for_it() {
    let Some(schema) = schema().await else {
        return;
    };
    let db = Proxy::start(vec![schema.server_addr().await]).await;
    db.down();
    let url = schema.url_via(db.addr);
    let up = async {
        // A fixed wait, on purpose: the database comes up a while after the relay.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        db.up();
    };
    let (relay, ()) = tokio::join!(PgRelay::start(&url, "127.0.0.1:0"), up);
    let warned = relay
        .log_tail()
        .iter()
        .any(|l| l.contains("cannot connect to PostgreSQL") && l.contains("retrying for up to"));
    assert!(warned, "the relay says it is waiting for the database");
    let (ch, _token) = meethook_testkit::create_channel(&relay.url(), ADMIN).await;
    let r = request(&client(), "POST", &relay.hook(&ch), &[], "after the wait")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(head(&schema, &ch).await, 1);

    // A wrong database name is not worth waiting for: it fails at once.
    let (user, rest) = url.split_once(&format!("@{}/", db.addr)).unwrap();
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    let wrong = format!("{user}@{}/mh_no_such_database?{query}", db.addr);
    let err = relay_that_fails(&wrong, &[]).await;
    assert!(
        err.contains("createdb") && !err.contains("retrying"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_behind_a_round_robin_each_killed_in_turn_lose_nothing() {
    let Some(schema) = schema().await else {
        return;
    };
    let url = schema.url();
    let (a, b, c) = tokio::join!(
        PgRelay::start(&url, "127.0.0.1:0"),
        PgRelay::start(&url, "127.0.0.1:0"),
        PgRelay::start(&url, "127.0.0.1:0")
    );
    let mut relays = [a, b, c];
    let lb = Proxy::round_robin(relays.iter().map(|r| r.addr).collect()).await;
    let lb_url = format!("http://{}", lb.addr);
    let (ch, _, handler, _jdir, daemon) = meethook_testkit::listening_to(&lb_url, ADMIN).await;
    let unavailable = Arc::new(AtomicUsize::new(0));
    let hooks = vec![format!("{lb_url}/hooks/{ch}")];
    let load = spray(hooks, 8, 250, Duration::from_millis(10), unavailable);
    // The listener's relay is among the three, so it loses its relay at least once and has
    // to find another through the balancer by itself.
    for (i, relay) in relays.iter_mut().enumerate() {
        handler.wait_delivered(100 * (i + 1)).await;
        assert!(load.iter().any(|t| !t.is_finished()), "still under load");
        let addr = relay.addr.to_string();
        relay.proc.kill9().await;
        // Back on the same address, as a supervisor would restart it.
        *relay = PgRelay::start(&url, &addr).await;
    }

    let acked = collect(load).await;
    assert_eq!(acked.len(), 8 * 250);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("pg-three-relays-round-robin-kill9", 3);
    assert_exactly_the_stored_seqs(&schema, &ch, &handler).await;
    daemon.stop().await.unwrap();
}

/// `meethook_relay_nodes` from a relay's `/metrics`.
async fn nodes_seen(relay: &PgRelay) -> Option<u64> {
    let r = request(
        &client(),
        "GET",
        &format!("{}/metrics", relay.url()),
        &[],
        "",
    )
    .await
    .ok()?;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("meethook_relay_nodes ")?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_auth_failure_limits_hold_for_two_relays_together() {
    let Some(schema) = schema().await else {
        return;
    };
    // A burst of 10 and next to no refill: what is accepted is the burst, whatever the timing.
    let limits = [
        "--rate-limit",
        "0.001",
        "--rate-burst",
        "10",
        "--auth-fail-limit",
        "4",
    ];
    let url = schema.url();
    let (a, b) = tokio::join!(
        PgRelay::start_with(&url, "127.0.0.1:0", &limits),
        PgRelay::start_with(&url, "127.0.0.1:0", &limits)
    );
    for relay in [&a, &b] {
        wait_for("both relays count two nodes", PATIENCE, || async {
            nodes_seen(relay).await == Some(2)
        })
        .await;
    }
    let (ch, _) = meethook_testkit::create_channel(&a.url(), ADMIN).await;
    let c = client();
    let mut accepted = 0;
    for i in 0..40 {
        let relay = if i % 2 == 0 { &a } else { &b };
        let r = request(&c, "POST", &relay.hook(&ch), &[], format!("{{\"n\":{i}}}"))
            .await
            .unwrap();
        match r.status {
            200 => accepted += 1,
            429 => {}
            s => panic!("unexpected {s}: {:?}", r.body),
        }
    }
    assert_eq!(
        accepted, 10,
        "the burst holds for the cluster, not per relay"
    );

    let mut refused = 0;
    for i in 0..12 {
        let relay = if i % 2 == 0 { &a } else { &b };
        let r = request(
            &c,
            "GET",
            &format!("{}/api/channels", relay.url()),
            &[("authorization", "Bearer wrong-token")],
            "",
        )
        .await
        .unwrap();
        match r.status {
            401 => refused += 1,
            429 => {}
            s => panic!("unexpected {s}: {:?}", r.body),
        }
    }
    assert_eq!(
        refused, 4,
        "--auth-fail-limit 4 holds for the cluster: then every request gets 429"
    );
}
