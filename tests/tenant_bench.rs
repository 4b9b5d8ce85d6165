//! `make bench` (issue #13 figures): TENANTS tenants × USERS users each in one real
//! `origin serve` on PostgreSQL (a throwaway server, `origin::store::postgres::test_server`),
//! measuring what a SaaS operator asks:
//! - the time to load (train) every tenant's model, driven by a first request to each;
//! - the latency of a request for a tenant whose model is not loaded (each first
//!   request), beside a request for a loaded one (a second round): p50/p99;
//! - the origin's resident memory before and after every tenant is loaded, and its peak
//!   (`VmHWM`): memory per loaded tenant;
//! - with a model cache smaller than all models (`--model-cache-mb`), the same rounds:
//!   evictions and reload latency;
//! - publishing: `origin publish --tenant … --targets kv-api` of PUBLISH_SAMPLE tenants
//!   (default 200), one process each, to `bench/fake_kv_api.py` (no local Cloudflare
//!   API exists; it implements the documented bulk endpoint): the mean per tenant and
//!   that times TENANTS (tenants publish independently: a KV pointer each).
//!
//! Setup (registry rows, catalogue and interactions through the store API) is timed
//! but not part of the figures. Usage: `tenant-bench` with `ORIGIN_BIN` (the binary to
//! run), `TENANTS` (10000), `USERS` (200), `ITEMS` (100), `CONCURRENCY` (8),
//! `CACHE_MB` (the small cache's size, 16).

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origin::store::{Batch, InteractionRow, ItemRow, Location, TenantStores};
use origin::tenants::{DisplayName, NewTenant, Quotas, Tenants};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant_id(i: usize) -> String {
    format!("t{i:05}")
}

/// `tenant`'s catalogue and interactions: each user views 10 items, tastes skewed so
/// models differ by tenant.
fn batch(i: usize, users: usize, items: usize) -> Batch {
    let mut b = Batch::default();
    for it in 0..items {
        b.items.push(ItemRow {
            item_id: format!("i{it}"),
            title: format!("Item {it} of tenant {i}"),
            ..Default::default()
        });
    }
    for u in 0..users {
        for k in 0..10 {
            let item = (u * 7 + k * k + i) % items;
            b.interactions.push(InteractionRow {
                user_id: format!("u{u}"),
                item_id: format!("i{item}"),
                weight: 1.0,
                ts: 1_764_000_000 + (u * 10 + k) as i64,
            });
        }
    }
    b
}

async fn setup(url: &str, tenants: usize, users: usize, items: usize) {
    let location = Location::parse(url).unwrap();
    let registry = Tenants::new(origin::store::open_tenants(&location).await.unwrap());
    let stores = Arc::new(
        TenantStores::new(&location, 1, Default::default())
            .await
            .unwrap(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (registry, stores, next) = (registry.clone(), stores.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tenants {
                    return;
                }
                let id = contract::Tenant::parse(&tenant_id(i)).unwrap();
                registry
                    .create(
                        NewTenant {
                            id: id.clone(),
                            name: DisplayName::parse(&format!("Tenant {i}")).unwrap(),
                            quotas: Quotas::default(),
                            model: None,
                        },
                        origin::clock::now_unix() as i64,
                    )
                    .await
                    .unwrap();
                let store = stores.open(&id).await.unwrap();
                store.import(batch(i, users, items)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(bin: &str, url: &str, cache_mb: &str, log: &std::path::Path) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args([
            "serve",
            "--db",
            url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--rate-limit-rps", "0", "--retrain-every-s", "0"])
        .args(["--model-cache-mb", cache_mb])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    // Owned at once: a panic below still stops the process.
    let served = Served {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let up = reqwest::blocking::get(format!("{}/health", served.base))
            .is_ok_and(|r| r.status() == 200);
        if up {
            return served;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the origin did not start; see {}", log.display());
}

/// (VmRSS, VmHWM) of `pid` in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One request per tenant (CONCURRENCY at once); gives each latency in ms and the
/// non-200 answers.
fn round(base: &str, tenants: usize, concurrency: usize) -> (Vec<f64>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Vec::with_capacity(tenants), 0usize)));
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            let (next, out) = (next.clone(), out.clone());
            s.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tenants {
                        return;
                    }
                    let url = format!("{base}/v1/recommendations/u1?tenant={}&n=10", tenant_id(i));
                    let started = Instant::now();
                    let ok = client.get(&url).send().is_ok_and(|r| r.status() == 200);
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    let mut o = out.lock().unwrap();
                    o.0.push(ms);
                    if !ok {
                        o.1 += 1;
                    }
                }
            });
        }
    });
    let (mut lat, failed) = Arc::try_unwrap(out).unwrap().into_inner().unwrap();
    lat.sort_by(f64::total_cmp);
    (lat, failed)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn health(base: &str) -> serde_json::Value {
    reqwest::blocking::get(format!("{base}/health"))
        .and_then(|r| r.json())
        .unwrap_or_default()
}

/// Waits until `loads` tenants have been loaded; gives the seconds waited.
fn wait_loaded(base: &str, loads: u64) -> f64 {
    let started = Instant::now();
    while health(base)["model_cache"]["loads"].as_u64().unwrap_or(0) < loads {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "loads never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let bin = std::env::var("ORIGIN_BIN").unwrap_or_else(|_| "target/native/origin".into());
    let tenants = env_or("TENANTS", 10_000);
    let users = env_or("USERS", 200);
    let items = env_or("ITEMS", 100);
    let concurrency = env_or("CONCURRENCY", 8);
    let small_cache = std::env::var("CACHE_MB").unwrap_or_else(|_| "16".into());
    let Some(server) = origin::store::postgres::test_server::shared() else {
        eprintln!("tenant-bench: PostgreSQL 15 is not installed; nothing measured");
        std::process::exit(1);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(server.database());
    let started = Instant::now();
    rt.block_on(setup(&url, tenants, users, items));
    eprintln!(
        "setup: {tenants} tenants x {users} users ({} interactions) in {:.1} s",
        tenants * users * 10,
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (label, cache_mb) in [
        ("cache holds all", "4096"),
        ("small cache", small_cache.as_str()),
    ] {
        let served = serve(
            &bin,
            &url,
            cache_mb,
            &dir.path().join(format!("origin-{cache_mb}.log")),
        );
        let pid = served.child.id();
        let (idle_rss, _) = memory_mb(pid);
        let t0 = Instant::now();
        let (cold, cold_failed) = round(&served.base, tenants, concurrency);
        let answered = t0.elapsed().as_secs_f64();
        let trained = answered + wait_loaded(&served.base, tenants as u64);
        let (rss, _) = memory_mb(pid);
        let (warm, warm_failed) = round(&served.base, tenants, concurrency);
        let (_, peak) = memory_mb(pid);
        let cache = health(&served.base)["model_cache"].clone();
        rows.push(format!(
            "| {label} ({cache_mb} MB) | {trained:.1} s | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {idle_rss:.0} MB | {rss:.0} MB | {peak:.0} MB | {:.1} KB | {} | {} |",
            pct(&cold, 0.5),
            pct(&cold, 0.99),
            pct(&warm, 0.5),
            pct(&warm, 0.99),
            (rss - idle_rss).max(0.0) * 1024.0 / tenants as f64,
            cache["evictions"],
            cold_failed + warm_failed,
        ));
        drop(served);
    }
    let sample = env_or("PUBLISH_SAMPLE", 200).min(tenants);
    let publish = (sample > 0).then(|| publish_sample(&bin, &url, sample));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{tenants} tenants x {users} users x 10 interactions, {items} items each, PostgreSQL, requests {concurrency} at a time").unwrap();
    writeln!(out).unwrap();
    writeln!(out, "| run | all tenants loaded (first request of each + training) | first round: unloaded tenant p50 / p99 | second round p50 / p99 (loaded, or evicted and reloaded) | RSS at start | RSS all loaded | peak RSS | RSS per loaded tenant | evictions | non-200 |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        writeln!(out, "{r}").unwrap();
    }
    if let Some((seconds, documents)) = publish {
        writeln!(out).unwrap();
        writeln!(
            out,
            "publish to KV (bulk API) of {sample} tenants, one `origin publish` each: {seconds:.1} s, {:.0} ms per tenant ({documents} documents); times {tenants}: {:.0} s",
            seconds * 1000.0 / sample as f64,
            seconds / sample as f64 * tenants as f64,
        )
        .unwrap();
    }
}

/// Publishes the first `sample` tenants to a local KV bulk API, one process each; gives
/// the seconds taken and the documents the API received.
fn publish_sample(bin: &str, url: &str, sample: usize) -> (f64, u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/fake_kv_api.py");
    let api = Served {
        child: Command::new("python3")
            .args([script, &port.to_string(), "bench-token"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("{}/stats", api.base)).is_err() {
        assert!(Instant::now() < deadline, "the fake KV API did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let api_url = format!("{}/client/v4", api.base);
    let started = Instant::now();
    for i in 0..sample {
        let out = Command::new(bin)
            .args(["publish", "--db", url, "--tenant", &tenant_id(i)])
            .args(["--targets", "kv-api", "--kv-account-id", "acc1"])
            .args(["--kv-namespace-id", "ns1", "--kv-api-url", &api_url])
            .args(["--kv-api-rps", "1000"])
            .env("CLOUDFLARE_API_TOKEN", "bench-token")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "publish {}: {}",
            tenant_id(i),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats: serde_json::Value = reqwest::blocking::get(format!("{}/stats", api.base))
        .and_then(|r| r.json())
        .unwrap_or_default();
    (seconds, stats["pairs"].as_u64().unwrap_or(0))
}
