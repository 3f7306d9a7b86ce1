//! A ledger on PostgreSQL with a streaming replica (throwaway servers, `pg_basebackup -R`, real `serve` processes on
//! loopback): a process on the replica serves reads, delivers the same gapless sequence, forwards commands, waits for
//! positions it has not replayed yet and reports its lag; with synchronous replication, nothing a stream delivered is
//! taken back when the primary is lost, even a commit whose wait for the standby was cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Server;
use crate::pg::{self, Pg};
use crate::shared_ledger::{
    assert_delivered_exist, get_json, http, log_on, off_thread, record, register, runtime, send,
    two_servers,
};

async fn wait_for<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_process_on_a_streaming_replica_serves_reads_forwards_commands_waits_for_what_it_lacks_and_reports_its_lag(
) {
    let primary = Pg::own();
    let schema = pg::fresh_schema_on(&primary);
    let replica = primary.replica();
    let (on_primary, on_replica) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    pg::register(on_primary.path(), &primary, &schema);
    pg::register(on_replica.path(), &replica, &schema);
    let writer = Server::launch(
        on_primary.path(),
        &[],
        Some(&on_primary.path().with_extension("stderr")),
    )
    .unwrap();
    let reader = Server::launch(
        on_replica.path(),
        &[],
        Some(&on_replica.path().with_extension("stderr")),
    )
    .unwrap();
    let (w, r) = (writer.url(), reader.url());
    let rt = runtime();
    let client = http();
    rt.block_on(async {
        // It says it reads a replica, names the writer, and reports its lag.
        let h = wait_for(Duration::from_secs(15), "the replica's process names the writer", async || {
            get_json(&client, &format!("{r}/healthz"))
                .await
                .filter(|h| h["writer"]["address"].is_string() && h["replica"].is_object())
        })
        .await;
        assert_eq!(h["role"], "replica", "{h}");
        assert_eq!(h["replica"]["streaming"], true, "{h}");
        assert!(h["replica"]["lag_seconds"].is_number(), "{h}");
        // Each process warned at start about the settings that weaken "acknowledged" or its reads.
        let said = |d: &tempfile::TempDir| {
            std::fs::read_to_string(d.path().with_extension("stderr")).unwrap_or_default()
        };
        assert!(said(&on_primary).contains("none is synchronous"), "{}", said(&on_primary));
        assert!(said(&on_replica).contains("hot_standby_feedback is off"), "{}", said(&on_replica));
        // Commands sent to it are forwarded to the writer; a read carrying the answer's position sees each at once.
        let mut visible_after = Vec::new();
        for n in 0..60 {
            let (_, customer, line) = register(1, n);
            let at = if n % 2 == 0 { &r } else { &w };
            let (status, answer, position) = send(&client, at, &line).await.unwrap();
            assert_eq!(status, 200, "{answer}");
            let answered = Instant::now();
            let view = client
                .get(format!("{r}/v1/customers/{customer}"))
                .header("ledger-min-position", position.unwrap().to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(view.status().as_u16(), 200, "command {n}");
            visible_after.push(answered.elapsed());
        }
        visible_after.sort();
        // Reported, not asserted (docs/operations.md quotes it): from the writer's answer to the replica's view.
        eprintln!(
            "replica: a command's effect visible through the replica {:?} (median) / {:?} (max) after its answer",
            visible_after[visible_after.len() / 2],
            visible_after.last().unwrap()
        );
        // The same gapless sequence with the same hashes as the primary's.
        let head = get_json(&client, &format!("{w}/healthz")).await.unwrap()["head"]
            .as_u64()
            .unwrap();
        assert!(head >= 60);
        let mine = wait_for(Duration::from_secs(10), "the replica's events", async || {
            let events = client
                .get(format!("{r}/v1/events?to={head}"))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let lines: Vec<Value> = events
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() as u64 == head).then_some(lines)
        })
        .await;
        let theirs = off_thread(|| log_on(&primary, &schema));
        for (i, e) in mine.iter().enumerate() {
            assert_eq!(e["position"].as_u64(), Some(i as u64 + 1));
            assert_eq!(e["hash"].as_str(), Some(theirs[i].1.as_str()));
        }
        // History and a backup come from the replica too, and the CLI's read-only commands run on it; one that
        // writes stops, saying the server is a standby.
        let (_, customer, _) = register(1, 0);
        let history = client
            .get(format!("{r}/v1/customers/{customer}/history"))
            .send()
            .await
            .unwrap();
        assert_eq!(history.status().as_u16(), 200);
        let backup = client
            .get(format!("{r}/v1/backup"))
            .send()
            .await
            .unwrap();
        assert_eq!(backup.status().as_u16(), 200);
        let backup = backup.text().await.unwrap();
        assert!(backup.lines().count() as u64 > head, "a backup line per event and more");
        let dir = on_replica.path().to_path_buf();
        let (verify, exec) = off_thread(move || {
            (
                crate::common::run(&dir, &["verify"], None),
                crate::common::run(&dir, &["exec", "-"], Some(register(3, 0).2.as_bytes())),
            )
        });
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
        assert_eq!(exec.status.code(), Some(4), "{}", String::from_utf8_lossy(&exec.stderr));
        assert!(String::from_utf8_lossy(&exec.stderr).contains("hot standby"));
        // Writes other than commands (a consumer's creation, acknowledgement, deletion) are refused with where to
        // send them; on the writer they work, and the replica then shows the consumer.
        let created = client
            .put(format!("{w}/v1/consumers/billing"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
        for attempt in [
            client.put(format!("{r}/v1/consumers/support")),
            client
                .post(format!("{r}/v1/consumers/billing/ack"))
                .header("content-type", "application/json")
                .body(r#"{"position": 1}"#),
            client.delete(format!("{r}/v1/consumers/billing")),
        ] {
            let refused = attempt.send().await.unwrap();
            assert_eq!(refused.status().as_u16(), 503);
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["error"], "read_only_replica", "{body}");
            assert!(body["message"].as_str().unwrap().contains(&w), "{body}");
        }
        let shown = wait_for(Duration::from_secs(5), "the consumer on the replica", async || {
            let r = client.get(format!("{r}/v1/consumers/billing")).send().await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        });
        shown.await;
        let metrics = client
            .get(format!("{r}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("partner_ledger_replica_lag_seconds "), "{metrics}");
        assert!(metrics.contains("partner_ledger_replica_streaming 1"), "{metrics}");

        // Replay paused: a position the primary has but the replica lacks waits, then 503 (not "beyond the head");
        // one the primary lacks too is beyond the head; once replay goes on, the wait ends with the events.
        off_thread(|| replica.sql("SELECT pg_wal_replay_pause()").unwrap());
        let (_, _, line) = register(2, 0);
        let (status, _, position) = send(&client, &w, &line).await.unwrap();
        assert_eq!(status, 200);
        let position = position.unwrap();
        let lacking = client
            .get(format!("{r}/v1/events?from={position}&limit=1"))
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .unwrap();
        assert_eq!(lacking.status().as_u16(), 503);
        let body: Value = lacking.json().await.unwrap();
        assert_eq!(body["error"], "position_not_reached", "{body}");
        let beyond = client
            .get(format!("{r}/v1/events?from={}", position + 1000))
            .send()
            .await
            .unwrap();
        assert_eq!(beyond.status().as_u16(), 400);
        let body: Value = beyond.json().await.unwrap();
        assert_eq!(body["error"], "beyond_head", "{body}");
        assert_eq!(body["head"], position, "the primary's head: {body}");
        let view = client
            .get(format!("{r}/healthz"))
            .header("ledger-min-position", position.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(view.status().as_u16(), 503);
        let waiting = {
            let (client, r) = (client.clone(), r.clone());
            tokio::spawn(async move {
                client
                    .get(format!("{r}/v1/events?from={}&limit=1", position - 1))
                    .header("accept", "application/x-ndjson")
                    .send()
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        off_thread(|| replica.sql("SELECT pg_wal_replay_resume()").unwrap());
        let answer = waiting.await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let text = answer.text().await.unwrap();
        assert!(text.contains(&format!("\"position\":{position}")), "{text}");

        // The replica promoted under it (a failover): the process stops following and says why, rather than go on
        // as a replica on what is now a primary.
        off_thread(|| replica.promote());
        let h = wait_for(Duration::from_secs(10), "the process to notice the promotion", async || {
            let r = client.get(format!("{r}/healthz")).send().await.ok()?;
            let status = r.status().as_u16();
            let h: Value = r.json().await.ok()?;
            (status == 503).then_some(h)
        })
        .await;
        assert!(h["following"].as_str().unwrap().contains("promoted"), "{h}");
    });
}

#[test]
fn with_a_synchronous_standby_no_stream_delivers_a_commit_that_a_failover_loses_even_when_its_wait_was_cancelled(
) {
    let primary = Pg::own();
    let schema = pg::fresh_schema_on(&primary);
    let standby = primary.replica();
    primary.set_synchronous(true);
    let (dirs, _servers, urls) = two_servers(|d| pg::register(d, &primary, &schema));
    let rt = runtime();
    let client = http();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorders: Vec<_> = urls
        .iter()
        .map(|u| record(&rt, u.clone(), Arc::clone(&stop)))
        .collect();
    let before = rt.block_on(async {
        for n in 0..20 {
            let (status, answer, _) = send(&client, &urls[n % 2], &register(1, n).2)
                .await
                .unwrap();
            assert_eq!(status, 200, "{answer}");
        }
        let head = get_json(&client, &format!("{}/healthz", urls[0]))
            .await
            .unwrap()["head"]
            .as_u64()
            .unwrap();
        let follower = &urls[1];
        wait_for(Duration::from_secs(5), "the follower follows", async || {
            let h = get_json(&client, &format!("{follower}/healthz")).await?;
            (h["head"] == head).then_some(())
        })
        .await;
        head
    });
    // The standby goes away: a commit waits for it, and its wait is cancelled again and again (as an operator's
    // pg_cancel_backend would): committed on the primary, visible there, on no standby.
    standby.stop_immediately();
    let pending = {
        let (client, url) = (client.clone(), urls[0].clone());
        rt.spawn(async move { send(&client, &url, &register(2, 0).2).await })
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut cancelled = 0;
    while Instant::now() < deadline {
        let mut c = postgres::Client::connect(&primary.url("postgres"), postgres::NoTls).unwrap();
        cancelled += c
            .query(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .unwrap()
            .len();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cancelled > 0, "a commit waited for the standby");
    // A command of the CLI that reads does not hang while no standby confirms: it stops, saying why.
    let verify = crate::common::run(dirs[1].path(), &["verify"], None);
    assert_eq!(
        verify.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("no synchronous standby confirmed"),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let on_primary = log_on(&primary, &schema);
    assert!(
        on_primary.len() as u64 > before,
        "the cancelled commit is visible on the primary"
    );
    for u in &urls {
        let h = rt
            .block_on(get_json(&client, &format!("{u}/healthz")))
            .unwrap();
        if h["head"] != before {
            for d in &dirs {
                eprintln!(
                    "{}",
                    std::fs::read_to_string(d.path().with_extension("stderr")).unwrap_or_default()
                );
            }
        }
        assert_eq!(h["head"], before, "{h}");
    }
    for (i, (d, _)) in recorders.iter().enumerate() {
        let got = d.lock().unwrap().clone();
        assert_eq!(
            got.len() as u64,
            before,
            "process {i}'s stream delivered only what the standby has"
        );
    }
    // The primary is lost; the standby (which never received the cancelled commit) is promoted.
    primary.stop_immediately();
    standby.start_again();
    standby.promote();
    let survived = log_on(&standby, &schema);
    assert_eq!(survived.len() as u64, before);
    stop.store(true, Ordering::SeqCst);
    for (i, (d, task)) in recorders.into_iter().enumerate() {
        rt.block_on(task).unwrap();
        assert_delivered_exist(&d.lock().unwrap(), &survived, &format!("process {i}"));
    }
    // The command whose commit was lost was never answered as committed.
    let answer = rt.block_on(pending).unwrap();
    if let Ok((status, body, _)) = &answer {
        assert_ne!(*status, 200, "{body}");
    }
}

use std::sync::atomic::Ordering;
