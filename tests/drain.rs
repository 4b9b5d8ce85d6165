//! The origin's drain on SIGTERM, end to end against a real `origin serve` (what a
//! Kubernetes rollout or scale-down does to a pod): it stops accepting at once, closes
//! idle connections, answers every request it had begun in full, keeps every event it
//! acknowledged, and exits 0 within `--shutdown-deadline-ms` — also when SIGTERM comes
//! while its first model is still training.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{run_origin, LoneOrigin, ADMIN_TOKEN};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const SIGTERM: i32 = 15;

fn demo_db(dir: &Path, users: u32, items: u32) -> String {
    let db = e2e::new_database(dir);
    run_origin(
        &[
            "demo-data",
            "--db",
            &db,
            "--users",
            &users.to_string(),
            "--items",
            &items.to_string(),
        ],
        &[],
    );
    db
}

/// `n` events with ids `{prefix}-{j}`.
fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|j| {
            json!({
                "event_id": format!("{prefix}-{j}"),
                "user_id": format!("u{}", j % 50 + 1),
                "item_id": format!("i{}", j % 40 + 1),
                "type": "view",
            })
        })
        .collect()
}

/// Reads one HTTP/1.1 answer with a `content-length` from `s`: (status, body).
fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).expect("reading the answer");
        assert!(
            n > 0,
            "connection closed before a full answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body[..length].to_string());
            }
        }
    }
}

/// A request whose headers and first half of the body go out before SIGTERM and whose
/// rest is sent slowly after it: in flight, by construction, across the signal.
fn slow_request(
    port: u16,
    method_path: &str,
    body: String,
    ready: mpsc::Sender<()>,
    sigterm_sent: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method_path} HTTP/1.1\r\nHost: origin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first.as_bytes()).unwrap();
    ready.send(()).unwrap();
    while !sigterm_sent.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The rest over 1.5 s, well inside the deadline.
    let pieces: Vec<&[u8]> = rest.as_bytes().chunks(rest.len().div_ceil(10)).collect();
    for piece in pieces {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(piece)
            .expect("the origin closed a request in flight while its body was arriving");
    }
    let answer = read_answer(&mut s);
    done.store(true, Ordering::SeqCst);
    answer
}

#[test]
fn sigterm_refuses_new_connections_answers_requests_in_flight_keeps_acknowledged_events_and_exits_0(
) {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 200, 100);
    let deadline = Duration::from_millis(5000);
    let deadline_ms = deadline.as_millis().to_string();
    let mut origin =
        LoneOrigin::start_trained(&db, dir.path(), &["--shutdown-deadline-ms", &deadline_ms]);
    let port = origin.port;

    // An idle keep-alive connection, as a proxy or the edge would hold one.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: origin\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_answer(&mut idle).0, 200);

    // Writers post batches of events, each with event ids, until the origin is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let sigterm_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, acked, sigterm_at) = (stop.clone(), acked.clone(), sigterm_at.clone());
            let url = origin.url("/v1/events");
            std::thread::spawn(move || {
                let client = Client::builder()
                    .timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let prefix = format!("drain-{w}-{k}");
                    let n = 40;
                    let sent = Instant::now();
                    match client
                        .post(&url)
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&json!({"events": events(&prefix, n)}))
                        .send()
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: Value = r.json().unwrap_or(Value::Null);
                            assert_eq!(status, 202, "{prefix}: {body}");
                            assert_eq!(body["accepted"], n, "{body}");
                            acked.lock().unwrap().push((prefix, n));
                        }
                        Err(e) => {
                            // Only once SIGTERM was sent: refused, or closed unread.
                            let signalled = sigterm_at
                                .lock()
                                .unwrap()
                                .is_some_and(|t| t <= sent + Duration::from_millis(250));
                            assert!(signalled, "{prefix} failed before SIGTERM: {e}");
                            return;
                        }
                    }
                    k += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));

    // Two slow requests in flight across SIGTERM: a write and a read.
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let slow_events = events("slow", 200);
    let write_done = Arc::new(AtomicBool::new(false));
    let read_done = Arc::new(AtomicBool::new(false));
    let slow_write = {
        let (ready, sent, done) = (ready_tx.clone(), sigterm_sent.clone(), write_done.clone());
        let body = json!({"events": slow_events}).to_string();
        std::thread::spawn(move || slow_request(port, "POST /v1/events", body, ready, sent, done))
    };
    let users: Vec<String> = (1..=300).map(|u| format!("u{u}")).collect();
    let slow_read = {
        let (ready, sent, done) = (ready_tx.clone(), sigterm_sent.clone(), read_done.clone());
        let body = json!({"user_ids": users, "n": 10}).to_string();
        std::thread::spawn(move || {
            slow_request(
                port,
                "POST /v1/recommendations/batch",
                body,
                ready,
                sent,
                done,
            )
        })
    };
    for _ in 0..2 {
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let acked_before = acked.lock().unwrap().len();
    assert!(acked_before > 0, "no batch was acknowledged before SIGTERM");

    let started = Instant::now();
    *sigterm_at.lock().unwrap() = Some(started);
    // SAFETY: signals the origin this test started.
    assert_eq!(unsafe { libc::kill(origin.proc.pid(), SIGTERM) }, 0);
    sigterm_sent.store(true, Ordering::SeqCst);

    // New connections are refused at once, while the slow requests are still running.
    let refused_after = loop {
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break started.elapsed(),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still accepting connections 1 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        !write_done.load(Ordering::SeqCst) && !read_done.load(Ordering::SeqCst),
        "the slow requests finished before the listener closed; the test proves nothing"
    );
    // The idle connection is closed, not kept until the deadline.
    let mut rest = Vec::new();
    let closed = idle.read_to_end(&mut rest);
    assert!(
        closed.is_ok() && rest.is_empty() && started.elapsed() < Duration::from_secs(2),
        "idle keep-alive connection: {closed:?} {rest:?} after {:?}",
        started.elapsed()
    );

    // Every request in flight gets its whole answer.
    let (status, body) = slow_write.join().unwrap();
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &answer["accepted"]), (202, &json!(200)), "{body}");
    let (status, body) = slow_read.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), users.len());
    for (doc, user) in results.iter().zip(&users) {
        assert_eq!(&doc["user_id"], user);
        assert!(!doc["items"].as_array().unwrap().is_empty(), "{doc}");
    }

    // And the process exits 0 soon after, inside the deadline.
    let status = origin
        .proc
        .wait_exit(deadline + Duration::from_secs(2))
        .unwrap_or_else(|| {
            panic!(
                "still running {:?} after SIGTERM; log:\n{}",
                started.elapsed(),
                origin.proc.log_tail()
            )
        });
    let exited_after = started.elapsed();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        origin.proc.log_tail()
    );
    assert!(exited_after < deadline, "exited after {exited_after:?}");
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let mut acked = acked.lock().unwrap().clone();
    acked.push(("slow".into(), 200));
    eprintln!(
        "refused new connections {refused_after:?} after SIGTERM, exited 0 after \
         {exited_after:?}; {} batches acknowledged ({acked_before} before SIGTERM)",
        acked.len()
    );

    // Every acknowledged event is in the log: sent again to a restarted origin, each
    // one is a duplicate of an event it already holds.
    let again = LoneOrigin::start(&db, dir.path(), &[]);
    e2e::wait_for_http(&again.url("/health"), &again.proc, Duration::from_secs(20));
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for (prefix, n) in &acked {
        let r = client
            .post(again.url("/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"events": events(prefix, *n)}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let body: Value = r.json().unwrap();
        assert_eq!(
            (&body["accepted"], &body["duplicates"]),
            (&json!(n), &json!(n)),
            "batch {prefix} was acknowledged before the shutdown but is not all in the log: {body}"
        );
    }
}

#[test]
fn sigterm_while_the_first_model_trains_still_exits_0_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // `--model auto` tunes every model first: far longer than the deadline here.
    let db = demo_db(dir.path(), 1000, 500);
    let deadline = Duration::from_millis(2000);
    let deadline_ms = deadline.as_millis().to_string();
    let mut origin = LoneOrigin::start(
        &db,
        dir.path(),
        &["--shutdown-deadline-ms", &deadline_ms, "--model", "auto"],
    );
    e2e::wait_for_http(
        &origin.url("/health"),
        &origin.proc,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        origin.health()["status"],
        "loading",
        "the model trained before SIGTERM; the test proves nothing"
    );
    let started = Instant::now();
    // SAFETY: signals the origin this test started.
    assert_eq!(unsafe { libc::kill(origin.proc.pid(), SIGTERM) }, 0);
    let status = origin
        .proc
        .wait_exit(deadline + Duration::from_secs(3))
        .unwrap_or_else(|| {
            panic!(
                "still running {:?} after SIGTERM (waiting for the training?); log:\n{}",
                started.elapsed(),
                origin.proc.log_tail()
            )
        });
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&origin.proc.log).unwrap();
    assert!(
        !log.contains("first model trained"),
        "the training finished before the exit; the test proves nothing"
    );
    eprintln!(
        "exited 0 {:?} after SIGTERM during training",
        started.elapsed()
    );
}
