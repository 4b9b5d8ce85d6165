//! `make bench` part for the edge: starts a real stack (wrangler dev, origin, CDN) and
//! measures, in one run,
//! - throughput and latency of an edge-cache hit against `/health` (the runtime's
//!   floor) with `wrk`, alternating the two routes to share the machine's noise: with
//!   impressions off, on (batches of 100 and 500 going to the real origin), and on with
//!   the origin swapped for a sink that takes batches and stores nothing, which splits
//!   the edge's own cost of impressions from the origin's durable ingest on the same cores;
//! - the first-request cost of loading the GeoIP database in the worker, for the
//!   default build (from KV) and, when given, a build with the database embedded.
//!
//! Usage: `edge-bench [--worker PATH/index.js] [--embedded-worker PATH/index.js]
//! [--seconds 10] [--rate-limiter]`; prints markdown. `--worker` runs the hit
//! measurements on another build than `edge/build` (to compare a change against main in
//! the same session). `--rate-limiter` measures instead the edge-cache hit with the
//! `EVENTS_LIMITER` rate limiting binding bound and without it (impressions off), in one
//! run, alternating hit and floor as above.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{header, served, Stack, StackOptions};

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().map(|x| x / 1000.0).unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().map(|x| x * 1000.0).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

fn wrk(url: &str, seconds: u64) -> WrkResult {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = WrkResult {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        }
    }
    assert!(r.rps.is_finite(), "could not parse wrk output:\n{text}");
    r
}

/// Where the edge's impressions go in place of the origin: a plain HTTP/1.1 server on
/// `port` that reads each request whole and answers `202` without storing anything.
/// Counts the `/v1/impressions` batches it took, so the run shows the edge really sent them.
fn event_sink(port: u16) -> Arc<AtomicU64> {
    let listener =
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind event sink");
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || serve_sink_connection(stream, &counter));
        }
    });
    batches
}

fn serve_sink_connection(stream: TcpStream, batches: &AtomicU64) {
    let mut writer = stream.try_clone().expect("clone sink stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if request_line.contains(" /v1/impressions ") {
            batches.fetch_add(1, Ordering::Relaxed);
        }
        let answer = b"{\"accepted\":true}";
        let head = format!(
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Client-side time of the first GeoIP-needing request of the isolate (it loads the
/// database) and of the next one. (Inside the worker the clock does not advance during
/// compute, so the worker cannot time the parse itself.)
fn geo_first_request(stack: &Stack) -> (f64, f64) {
    let t = Instant::now();
    let h = served(stack.get_as("/health", "81.2.69.160"));
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(h["geo_db"]["state"], "loaded", "{h}");
    let t = Instant::now();
    let _ = stack.get_as("/health", "89.160.20.112");
    let next_ms = t.elapsed().as_secs_f64() * 1e3;
    (first_ms, next_ms)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    if args.iter().any(|a| a == "--rate-limiter") {
        return rate_limiter_run(seconds, arg("--worker"));
    }

    // Impressions off first (the cache hit alone), then on (each answer also records its
    // items and a batch goes to the origin when IMPRESSION_BATCH impressions are waiting),
    // with batches of 500 and of the default 2000 (10-item answers: a send every 50th or
    // 200th request), then the default to a sink in place of the origin.
    let mut rows = Vec::new();
    let mut geo_kv = (f64::NAN, f64::NAN);
    let mut sink_batches = 0;
    let runs = [
        (false, None, false),
        (true, Some(500), false),
        (true, None, false),
        (true, None, true),
    ];
    for (impressions, batch, to_sink) in runs {
        let mut vars = vec![("IMPRESSIONS", impressions.to_string())];
        if let Some(b) = batch {
            vars.push(("IMPRESSION_BATCH", b.to_string()));
        }
        let mut stack = Stack::start(StackOptions {
            users: 200,
            items: 120,
            vars,
            worker: arg("--worker").map(Into::into),
            ..Default::default()
        });
        if !impressions {
            geo_kv = geo_first_request(&stack);
        }
        stack.publish("kv", None);
        let path = "/v1/recommendations/u1".to_string();
        let warm = stack.get(&path);
        let _ = stack.get(&path);
        let hit = stack.get(&path);
        let by = header(&warm, "x-served-by");
        assert_eq!(
            header(&hit, "x-cache"),
            "HIT",
            "warm-up did not reach the edge cache ({by})"
        );
        // The hit needs the origin no more; from here on it only takes impressions.
        let sink = to_sink.then(|| {
            stack.stop_origin(0);
            event_sink(stack.origin_port(0))
        });
        let (mut floor, mut hits) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            floor.push(wrk(&stack.edge_url("/health"), seconds));
            hits.push(wrk(&stack.edge_url(&path), seconds));
        }
        if let Some(sink) = sink {
            sink_batches = sink.load(Ordering::Relaxed);
        }
        let m = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(v.iter().map(f).collect());
        let f = (
            m(&floor, |r| r.rps),
            m(&floor, |r| r.p50_ms),
            m(&floor, |r| r.p99_ms),
        );
        let h = (
            m(&hits, |r| r.rps),
            m(&hits, |r| r.p50_ms),
            m(&hits, |r| r.p99_ms),
        );
        rows.push((impressions, batch, to_sink, f, h));
    }
    let (geo_kv_first, geo_kv_next) = geo_kv;

    println!("### Edge-cache hit vs the runtime's floor (wrk -t2 -c32 -d{seconds}s, median of 2 alternating runs)\n");
    println!("| impressions | route | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for (impressions, batch, to_sink, (f_rps, f_p50, f_p99), (h_rps, h_p50, h_p99)) in rows {
        let batch = match batch {
            Some(b) => format!("batch {b}"),
            None => "default batch".to_string(),
        };
        let on = match (impressions, to_sink) {
            (false, _) => "off".to_string(),
            (true, false) => format!("on, {batch}"),
            (true, true) => format!("on, {batch}, to a sink"),
        };
        println!("| {on} | `/health` (floor) | {f_rps:.0} | {f_p50:.1} | {f_p99:.1} |");
        println!("| {on} | edge-cache hit | {h_rps:.0} | {h_p50:.1} | {h_p99:.1} |");
        let (r, p50, p99) = (h_rps / f_rps, h_p50 / f_p50, h_p99 / f_p99);
        println!("| {on} | **hit / floor** | {r:.2}× throughput | {p50:.2}× | {p99:.2}× |");
    }
    println!("\nThe sink took {sink_batches} batches of impressions.\n");
    assert!(sink_batches > 0, "the edge sent no impressions to the sink");

    println!("### GeoIP database: first request in a fresh isolate state\n");
    println!("| build | first GeoIP request ms (loads the DB) | next request ms | load cost ms |\n|---|---|---|---|");
    println!(
        "| from KV (default) | {geo_kv_first:.1} | {geo_kv_next:.1} | {:.1} |",
        geo_kv_first - geo_kv_next
    );
    if let Some(embedded) = arg("--embedded-worker") {
        let stack = Stack::start(StackOptions {
            users: 30,
            items: 30,
            worker: Some(embedded.into()),
            ..Default::default()
        });
        std::thread::sleep(Duration::from_millis(200));
        let (first, next) = geo_first_request(&stack);
        println!(
            "| embedded (`--features embedded-geo`) | {first:.1} | {next:.1} | {:.1} |",
            first - next
        );
    }
}

/// Median (req/s, p50 ms, p99 ms) of two alternating wrk runs each of the floor
/// (`/health`) and of a warm edge-cache hit, on a fresh stack.
fn hit_and_floor(opts: StackOptions, seconds: u64) -> ((f64, f64, f64), (f64, f64, f64)) {
    let stack = Stack::start(opts);
    stack.publish("kv", None);
    let path = "/v1/recommendations/u1";
    let _ = stack.get(path);
    let _ = stack.get(path);
    assert_eq!(header(&stack.get(path), "x-cache"), "HIT", "warm-up missed");
    let (mut floor, mut hits) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        floor.push(wrk(&stack.edge_url("/health"), seconds));
        hits.push(wrk(&stack.edge_url(path), seconds));
    }
    let m = |v: &[WrkResult]| {
        (
            median(v.iter().map(|r| r.rps).collect()),
            median(v.iter().map(|r| r.p50_ms).collect()),
            median(v.iter().map(|r| r.p99_ms).collect()),
        )
    };
    (m(&floor), m(&hits))
}

/// `--rate-limiter`: the hit with and without the `EVENTS_LIMITER` binding.
fn rate_limiter_run(seconds: u64, worker: Option<String>) {
    let limiter = "[[ratelimits]]\nname = \"EVENTS_LIMITER\"\nnamespace_id = \"1001\"\n\
                   simple = { limit = 100, period = 60 }\n";
    let mut rows = Vec::new();
    for on in [false, true] {
        let opts = StackOptions {
            users: 200,
            items: 120,
            vars: vec![("IMPRESSIONS", "false".to_string())],
            worker: worker.clone().map(Into::into),
            extra_config: if on {
                limiter.to_string()
            } else {
                String::new()
            },
            ..Default::default()
        };
        rows.push((on, hit_and_floor(opts, seconds)));
    }
    println!("### Edge-cache hit with the rate limiter bound and without (wrk -t2 -c32 -d{seconds}s, median of 2 alternating runs, impressions off)\n");
    println!("| rate limiter | route | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for (on, ((f_rps, f_p50, f_p99), (h_rps, h_p50, h_p99))) in &rows {
        let on = if *on { "on" } else { "off" };
        println!("| {on} | `/health` (floor) | {f_rps:.0} | {f_p50:.1} | {f_p99:.1} |");
        println!("| {on} | edge-cache hit | {h_rps:.0} | {h_p50:.1} | {h_p99:.1} |");
    }
    let hit = |i: usize| rows[i].1 .1 .0;
    let floor = |i: usize| rows[i].1 .0 .0;
    println!(
        "\nHit throughput, limiter on / off: {:.2}× (the floor: {:.2}×).",
        hit(1) / hit(0),
        floor(1) / floor(0)
    );
}
