//! A throwaway PostgreSQL server for tests: Debian's PostgreSQL 15 binaries
//! (`initdb`, `pg_ctl`; `scripts/setup.sh` installs them) run on a fresh temporary
//! folder, listening on a free port of 127.0.0.1 (and a socket in the same folder),
//! with trust authentication for the test connections.
//!
//! `initdb` refuses to run as root, so as root the server runs as the `postgres`
//! system user (`runuser -u postgres --`), its folder handed to that user. A
//! [`PgServer`] is stopped (`pg_ctl stop -m immediate`) and its folder removed when it
//! is dropped, also when a test panics; and since the one a test binary shares
//! ([`shared`]) lives in a static, which is never dropped, every server also has a
//! watchdog process that stops it and removes its folder once the test process is
//! gone, however it ended. [`PgServer::start_replica`] makes a streaming replica
//! (`pg_basebackup -R`).
//!
//! When the binaries or the `postgres` user are missing, [`available`] says why; with
//! `CI` set in the environment the tests fail on that, elsewhere they skip with the
//! reason printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian puts PostgreSQL 15's server binaries (`PG_BIN` overrides).
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` system user.
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !o.status.success() {
            return None;
        }
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Whether a server can be started here; `Err` says what is missing.
pub fn available() -> Result<(), String> {
    let bin = bin_dir();
    for tool in ["initdb", "pg_ctl"] {
        if !bin.join(tool).exists() {
            return Err(format!(
                "{} is missing: install Debian's postgresql-15 (scripts/setup.sh does)",
                bin.join(tool).display()
            ));
        }
    }
    if is_root() && postgres_ids().is_none() {
        return Err("running as root and there is no `postgres` user to run initdb as".into());
    }
    Ok(())
}

/// `Some(())` when a server can be started; otherwise panics when `CI` is set (no test
/// silently skips in CI), or prints why and gives `None` so the caller skips.
pub fn require() -> Option<()> {
    match available() {
        Ok(()) => Some(()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL tests cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping a PostgreSQL test: {why}");
            None
        }
    }
}

/// A running PostgreSQL server in a temporary folder.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    next_db: AtomicU32,
}

/// A port free on 127.0.0.1 right now (nothing listens on it), for tests.
pub fn free_port_for_tests() -> u16 {
    free_port().expect("a free port")
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    /// The command running `tool` of the server binaries, as `postgres` when root.
    fn tool(&self, tool: &str) -> Command {
        tool_command(self.as_postgres, tool)
    }

    /// A new temporary folder (handed to `postgres` when root) and a free port.
    fn prepare() -> Result<PgServer, String> {
        available()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("origin-pg-")
            .tempdir()
            .map_err(|e| format!("temporary folder: {e}"))?
            .keep();
        if as_postgres {
            let (uid, gid) = postgres_ids().ok_or("no postgres user")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let port = free_port().map_err(|e| format!("free port: {e}"))?;
        let server = PgServer {
            dir,
            port,
            as_postgres,
            next_db: AtomicU32::new(0),
        };
        // Whatever happens to this process, the server does not outlive it.
        server.watch(std::process::id());
        Ok(server)
    }

    /// Starts the server of `data/` and waits until it accepts connections.
    fn launch(self) -> Result<PgServer, String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]))
        .map_err(|e| format!("{e}\n{}", self.log()))?;
        self.wait_ready()?;
        Ok(self)
    }

    /// initdb into a new temporary folder, start on a free port, wait until it accepts
    /// connections.
    pub fn start() -> Result<PgServer, String> {
        let server = Self::prepare()?;
        run(server
            .tool("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"))?;
        server.launch()
    }

    /// A streaming replica of this server (`pg_basebackup -R`: a copy of its data that
    /// follows its WAL), in a temporary folder of its own on another free port. Read
    /// only; it sees what the primary commits after a short lag.
    pub fn start_replica(&self) -> Result<PgServer, String> {
        let replica = Self::prepare()?;
        run(replica
            .tool("pg_basebackup")
            .arg("-D")
            .arg(replica.data_dir())
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string()]))?;
        replica.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Turns TLS on with a certificate for `127.0.0.1` signed by a new test CA (both
    /// made with the `openssl` command, which Debian's PostgreSQL packages bring) and
    /// reloads the configuration; returns the CA's PEM file, the root a client trusts.
    pub async fn enable_tls(&self) -> Result<PathBuf, String> {
        let at = |name: &str| self.dir.join(name);
        let (ca, ca_key, csr) = (at("ca.crt"), at("ca.key"), at("server.csr"));
        let (cert, key, ext) = (at("server.crt"), at("server.key"), at("server.ext"));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-subj", "/CN=origin test CA"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca))?;
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
        )
        .map_err(|e| format!("{}: {e}", ext.display()))?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", key.display()))?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids().ok_or("no postgres user")?;
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", f.display()))?;
            }
        }
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        // The paths are our own temporary folder's, quoted as SQL literals.
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "''"));
        // One statement per call: ALTER SYSTEM refuses to run in a multi-statement batch.
        for statement in [
            format!("ALTER SYSTEM SET ssl_cert_file = {}", quote(&cert)),
            format!("ALTER SYSTEM SET ssl_key_file = {}", quote(&key)),
            "ALTER SYSTEM SET ssl = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| format!("{statement}: {e}\n{}", self.log()))?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let on: String = client
                .query_one("SHOW ssl", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if on == "on" {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("ssl still off after the reload\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(client);
        let _ = task.await;
        Ok(ca)
    }

    /// The server's log so far (for errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary folder (data in `data/`, the socket, the log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` as the `postgres` superuser (trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .tool("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL did not accept connections\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a new, empty database (`t_<n>`) and gives its URL.
    pub async fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t_{n}");
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        let task = tokio::spawn(conn);
        // The name is built from an integer only.
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// Stops the server at once and removes its folder.
    pub fn stop(&self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Starts a watchdog (in its own session) that stops this server and removes its
    /// folder once process `pid` is gone.
    fn watch(&self, pid: u32) {
        let runner = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {runner}{bin}/pg_ctl -D '{data}' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            bin = bin_dir().display(),
            data = self.data_dir().display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tool_command(as_postgres: bool, tool: &str) -> Command {
    let path = bin_dir().join(tool);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The server this test process shares (started on first use), or `None` (with the
/// reason printed) when PostgreSQL is not installed here and `CI` is not set.
pub fn shared() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    require()?;
    let server = SERVER.get_or_init(PgServer::start);
    match server {
        Ok(s) => Some(s),
        Err(e) => panic!("cannot start the test PostgreSQL server: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_follows_the_primary_and_refuses_writes() {
        let Some(primary) = shared() else { return };
        let url = primary.database().await;
        let db = url.rsplit('/').next().unwrap().to_owned();
        let writer = connect(&url).await;
        writer
            .batch_execute("CREATE TABLE t(x int); INSERT INTO t VALUES (1);")
            .await
            .unwrap();
        let replica = primary.start_replica().unwrap();
        let reader = connect(&replica.url(&db)).await;
        writer
            .execute("INSERT INTO t VALUES (2)", &[])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n: i64 = reader
                .query_one("SELECT COUNT(*) FROM t", &[])
                .await
                .unwrap()
                .get(0);
            if n == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not catch up:\n{}",
                replica.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = reader.execute("INSERT INTO t VALUES (3)", &[]).await;
        assert!(refused.is_err());
        let dir = replica.dir().to_owned();
        drop(replica);
        assert!(!dir.exists(), "a dropped server removes its folder");
    }
}
