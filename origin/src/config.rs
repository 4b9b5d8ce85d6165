//! Command-line and environment configuration of every `origin` subcommand.
//!
//! [`Config`] is the one documented configuration: each flag has a default and an
//! `ORIGIN_*` environment variable; the edge admin token comes only from the
//! `ADMIN_TOKEN` environment variable (never a flag, never logged — see [`Secret`]).
//! [`Config::validate`] checks what clap cannot.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use contract::{Region, RegionMap, Tenant, UserId};
use thiserror::Error;

pub use crate::auth::{Secret, ADMIN_TOKEN_ENV};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--tenant: {0}")]
    Tenant(contract::IdError),
    #[error("--region {0:?} is not one of the known regions ({1})")]
    Region(String, String),
    #[error("--n/--publish-n must be 1 to {max}, not {0}", max = contract::MAX_N)]
    N(usize),
    #[error("--users: {0}")]
    User(contract::IdError),
    #[error("publishing to KV needs --edge-url and the ADMIN_TOKEN environment variable")]
    KvNeedsEdge,
    #[error("publishing to the CDN folder needs --out")]
    CdnNeedsOut,
    #[error("--edge-url must start with http:// or https://, not {0:?}")]
    EdgeUrl(String),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{0} must be a number above 0")]
    NotPositive(&'static str),
    #[error("publishing to kv-api needs --kv-account-id (CLOUDFLARE_ACCOUNT_ID) and --kv-namespace-id (ORIGIN_KV_NAMESPACE_ID), each 1-64 letters and digits, and the CLOUDFLARE_API_TOKEN environment variable")]
    KvApiNeedsIds,
    #[error("publishing to object-storage needs --s3-endpoint (ORIGIN_S3_ENDPOINT), --s3-bucket (ORIGIN_S3_BUCKET) and the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables")]
    ObjectStorageNeeds,
    #[error("--delta publishes every user (a base must hold them all); it cannot be combined with --users")]
    DeltaWithUsers,
    #[error("--kv-api-rps must be above 0 and at most 1000, not {0}")]
    KvApiRate(String),
    #[error("--event-retention-months needs a PostgreSQL --db (a SQLite file has no monthly event partitions); use 0 with SQLite")]
    RetentionNeedsPostgres,
}

/// The origin: stores interactions, computes recommendations, serves and publishes them.
#[derive(Debug, Parser)]
#[command(name = "origin", version, about)]
pub struct Config {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (trains the recommender from the database at startup).
    Serve(ServeConfig),
    /// Fill the database with generated, deterministic demo data (replaces its content).
    DemoData(DemoDataConfig),
    /// Import interactions from MovieLens `u.data` or CSV files (all or nothing).
    Import(ImportConfig),
    /// Import catalogue items (title, description, categories, tags, price, availability,
    /// attributes) from a CSV file with a header or JSON Lines (all or nothing).
    ImportItems(ImportItemsConfig),
    /// Compute every user's recommendations and publish them to the CDN folder and/or edge KV.
    Publish(PublishConfig),
    /// Serve the published CDN folder (`DIR/current`) as static JSON; needs no database.
    Cdn(CdnConfig),
    /// Train a model and score its top-K recommendations on held-out interactions.
    Eval(crate::eval::cli::EvalArgs),
    /// Write a reproducible per-user train/validation/test split in `lists` format.
    Split(crate::eval::cli::SplitArgs),
    /// Write synthetic MovieLens-shaped interactions (for benchmarks and demos).
    Synth(crate::eval::cli::SynthArgs),
    /// Rebuild every projection of the event log (history, popularity, trending,
    /// co-occurrence, training interactions) from the log alone.
    Replay(ReplayConfig),
    /// Manage the tenant registry: create, list, show, delete, rotate-key.
    Tenants(crate::tenants::cli::TenantsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReplayConfig {
    /// The store holding the event log: a SQLite file (a path or `sqlite://PATH`) or a
    /// PostgreSQL URL (`postgres://…`).
    #[arg(long, env = "ORIGIN_DB", default_value = "var/origin.sqlite")]
    pub db: PathBuf,
    /// The tenant whose projections are rebuilt (on SQLite: the file holding its data).
    #[arg(long, env = "ORIGIN_TENANT", default_value = contract::DEFAULT_TENANT)]
    pub tenant: String,
}

/// Where the database is and which tenant it holds.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// The store: a SQLite file (a path or `sqlite://PATH`, created when missing) or a
    /// PostgreSQL URL (`postgres://user:password@host:port/db`).
    #[arg(long, env = "ORIGIN_DB", default_value = "var/origin.sqlite")]
    pub db: PathBuf,
    /// The tenant this database holds: the namespace of every published key and path
    /// (the server answers 404 to requests naming another tenant).
    #[arg(long, env = "ORIGIN_TENANT", default_value = contract::DEFAULT_TENANT)]
    pub tenant: String,
}

/// What may enter a model (see `admission`): shared by `serve` and `publish`.
#[derive(Debug, Clone, Args)]
pub struct PolicyConfig {
    /// Distinct users an item seen only in live events needs before it is trained on
    /// (catalogue items, imported or loaded, always are).
    #[arg(long, env = "ORIGIN_MIN_ITEM_USERS", default_value_t = 2)]
    pub min_item_users: u32,
    /// Most items in a model; past it the items with the most users win.
    #[arg(long, env = "ORIGIN_MAX_ITEMS", default_value_t = 20_000)]
    pub max_items: usize,
    /// Memory a model may use while training, in MiB: lowers the item cap to what a
    /// dense item x item model (EASE) fits, checked before allocating.
    #[arg(long, env = "ORIGIN_TRAIN_MEMORY_MB", default_value_t = 4096)]
    pub train_memory_mb: u64,
    /// Users one client (one IP, as the edge reports it) may introduce at full weight
    /// in popularity; each of a client's users counts this / its users beyond it.
    #[arg(long, env = "ORIGIN_USERS_PER_CLIENT", default_value_t = 20)]
    pub users_per_client: u32,
}

impl PolicyConfig {
    pub fn policy(&self) -> crate::admission::TrainingPolicy {
        crate::admission::TrainingPolicy {
            min_item_users: self.min_item_users,
            max_items: self.max_items.max(1),
            memory_budget_mb: self.train_memory_mb.max(1),
            users_per_client: self.users_per_client.max(1),
        }
    }
}

/// How the origin protects itself from clients: rate limits and timeouts.
#[derive(Debug, Clone, Args)]
pub struct GuardConfig {
    /// Requests per second one client may make (clients are keyed by IP; calls with the
    /// admin token, i.e. from the edge, are not limited here); 0 turns limits off.
    #[arg(long, env = "ORIGIN_RATE_LIMIT_RPS", default_value_t = 50)]
    pub rate_limit_rps: u32,
    /// Requests one client may make at once above its rate.
    #[arg(long, env = "ORIGIN_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Milliseconds a client has to send a request's headers.
    #[arg(long, env = "ORIGIN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body.
    #[arg(long, env = "ORIGIN_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Milliseconds a request may take in all (admin routes excepted: a retrain may run
    /// longer); past it the answer is 503 `timeout`.
    #[arg(long, env = "ORIGIN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Milliseconds after SIGTERM that requests in flight may still finish; then they
    /// are dropped and the process exits (acknowledged events are already committed).
    #[arg(long, env = "ORIGIN_SHUTDOWN_DEADLINE_MS", default_value_t = 10_000)]
    pub shutdown_deadline_ms: u64,
}

impl GuardConfig {
    pub fn serve_options(&self) -> crate::server::ServeOptions {
        use std::time::Duration;
        crate::server::ServeOptions {
            header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(self.body_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            shutdown_deadline: Duration::from_millis(self.shutdown_deadline_ms),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub store: StoreConfig,
    #[command(flatten)]
    pub model: crate::training::ModelConfig,
    #[command(flatten)]
    pub policy: PolicyConfig,
    #[command(flatten)]
    pub guard: GuardConfig,
    /// Address to listen on.
    #[arg(long, env = "ORIGIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Region this origin runs in; also the region of users not in the database.
    #[arg(long, env = "ORIGIN_REGION", default_value = "us-east")]
    pub region: String,
    /// Edge base URL for publish-on-miss (`POST {edge-url}/admin/publish`); needs ADMIN_TOKEN.
    #[arg(long, env = "ORIGIN_EDGE_URL")]
    pub edge_url: Option<String>,
    /// CDN folder (as written by `origin publish --out`); answered documents of known
    /// users are also written into its current generation.
    #[arg(long, env = "ORIGIN_PUBLISH_DIR")]
    pub publish_dir: Option<PathBuf>,
    /// Items per document published on a miss (at least the request's `n`; 1 to 100).
    #[arg(long, env = "ORIGIN_PUBLISH_N", default_value_t = 50)]
    pub publish_n: usize,
    /// Seconds a document is fresh.
    #[arg(long, env = "ORIGIN_FRESH_FOR_S", default_value_t = 300)]
    pub fresh_for_s: u64,
    /// Seconds a document may be served stale after freshness ends.
    #[arg(long, env = "ORIGIN_STALE_FOR_S", default_value_t = 86_400)]
    pub stale_for_s: u64,
    /// Address of the Prometheus `/metrics` listener (its own port).
    #[arg(long, env = "ORIGIN_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    /// Seconds between background full retrains; 0 turns scheduled retrains off. The
    /// other tenants' models retrain on the same schedule, each only when it has new
    /// events.
    #[arg(long, env = "ORIGIN_RETRAIN_EVERY_S", default_value_t = 3600)]
    pub retrain_every_s: u64,
    /// Megabytes of trained models of the other registered tenants (besides
    /// `--tenant`, whose model always stays) kept in memory; the least recently used
    /// are dropped and reloaded (retrained) on their next request.
    #[arg(long, env = "ORIGIN_MODEL_CACHE_MB", default_value_t = 512.0)]
    pub model_cache_mb: f64,
    /// Milliseconds without new events for a user before their document is republished.
    #[arg(long, env = "ORIGIN_REPUBLISH_DEBOUNCE_MS", default_value_t = 200)]
    pub republish_debounce_ms: u64,
    /// Shortest time between two publishes of one user, in milliseconds (Workers KV
    /// allows about one write per second per key; 0 = no limit).
    #[arg(long, env = "ORIGIN_PUBLISH_MIN_INTERVAL_MS", default_value_t = 1000)]
    pub publish_min_interval_ms: u64,
    /// Users whose last publish the origin remembers (least recently used forgotten
    /// first), and most users waiting for a republish after events.
    #[arg(long, env = "ORIGIN_PUBLISH_STATE_USERS", default_value_t = 100_000)]
    pub publish_state_users: usize,
    /// Seconds an event timestamp may be ahead of the origin's clock.
    #[arg(long, env = "ORIGIN_EVENT_MAX_FUTURE_S", default_value_t = 300)]
    pub event_max_future_s: u32,
    /// Most events committed in one group-commit transaction.
    #[arg(long, env = "ORIGIN_EVENT_GROUP_MAX", default_value_t = 5000)]
    pub event_group_max: usize,
    /// OpenTelemetry OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces
    /// (exported only when built with the `otel` cargo feature).
    #[arg(long, env = "ORIGIN_OTEL_ENDPOINT")]
    pub otel_endpoint: Option<String>,
    /// A streaming read replica of the PostgreSQL `--db` (`postgres://…`; repeat the
    /// flag, or a comma-separated list in the environment): serving, analytics and
    /// training read from healthy replicas, writes go to the primary.
    #[arg(long = "db-replica", env = "ORIGIN_DB_REPLICAS", value_delimiter = ',')]
    pub db_replicas: Vec<String>,
    /// Milliseconds a replica may lag behind the primary before reads leave it.
    #[arg(long, env = "ORIGIN_REPLICA_MAX_LAG_MS", default_value_t = 5000)]
    pub replica_max_lag_ms: u64,
    /// Milliseconds between a non-leader's attempts to take the leader lock (and the
    /// leader's checks that it still holds it): the bound on a failover.
    #[arg(long, env = "ORIGIN_LEADER_RETRY_MS", default_value_t = 2000)]
    pub leader_retry_ms: u64,
    /// Seconds between full publishes of every user's document to this origin's
    /// publish targets (--publish-dir, --edge-url), run by the leader only; 0 turns
    /// them off (publish with `origin publish` instead).
    #[arg(long, env = "ORIGIN_PUBLISH_EVERY_S", default_value_t = 0)]
    pub publish_every_s: u64,
    /// CDN generations a scheduled publish keeps in --publish-dir (older ones are
    /// deleted after the switch); 0 keeps all.
    #[arg(long, env = "ORIGIN_KEEP_GENERATIONS", default_value_t = 3)]
    pub keep_generations: usize,
    #[command(flatten)]
    pub schema: SchemaConfig,
    /// Months of the PostgreSQL event log kept (the current month counted); the leader
    /// detaches and drops older monthly partitions (at once, then hourly). 0 keeps
    /// everything.
    #[arg(long, env = "ORIGIN_EVENT_RETENTION_MONTHS", default_value_t = 0)]
    pub event_retention_months: u32,
}

/// How a new PostgreSQL schema is made (`serve`, `import`, `demo-data`).
#[derive(Debug, Clone, Args)]
pub struct SchemaConfig {
    /// Hash partitions of each per-user PostgreSQL table, 1 to 256 (default 8). Used
    /// only when the schema is created; a later start with another number keeps the
    /// schema's and logs a warning.
    #[arg(long, env = "ORIGIN_DB_USER_PARTITIONS",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub db_user_partitions: Option<u32>,
}

impl SchemaConfig {
    /// The store's schema options.
    pub fn options(&self) -> crate::store::SchemaOptions {
        crate::store::SchemaOptions {
            user_partitions: self.db_user_partitions,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoDataConfig {
    /// The store whose content (the tenant's items, users and interactions) is
    /// replaced: a SQLite file (a path or `sqlite://PATH`, created when missing) or a
    /// PostgreSQL URL (`postgres://…`).
    #[arg(long, env = "ORIGIN_DB", default_value = "var/origin.sqlite")]
    pub db: PathBuf,
    /// The tenant whose rows are written (PostgreSQL keys every row by it; a SQLite
    /// file holds one tenant).
    #[arg(long, env = "ORIGIN_TENANT", default_value = contract::DEFAULT_TENANT)]
    pub tenant: String,
    #[command(flatten)]
    pub schema: SchemaConfig,
    /// Number of users.
    #[arg(long, env = "ORIGIN_DEMO_USERS", default_value_t = 3000)]
    pub users: u64,
    /// Number of items.
    #[arg(long, env = "ORIGIN_DEMO_ITEMS", default_value_t = 1000)]
    pub items: u64,
    /// Random seed; the same seed gives the same database content.
    #[arg(long, env = "ORIGIN_DEMO_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Average interactions per user.
    #[arg(long, env = "ORIGIN_DEMO_INTERACTIONS_PER_USER", default_value_t = 30)]
    pub interactions_per_user: u32,
    /// What the demo shop sells: `mixed` (ids `i…`), `books` (`b…`, prices, a few out
    /// of stock), `fashion` (`f…`, the same) or `news` (`n…`, articles).
    #[arg(
        long,
        value_enum,
        env = "ORIGIN_DEMO_CATALOGUE",
        default_value = "mixed"
    )]
    pub catalogue: crate::demo_data::Catalogue,
}

pub use crate::import::ImportFormat;

#[derive(Debug, Clone, Args)]
pub struct ImportConfig {
    /// The store: a SQLite file (a path or `sqlite://PATH`, created when missing) or a
    /// PostgreSQL URL (`postgres://…`).
    #[arg(long, env = "ORIGIN_DB", default_value = "var/origin.sqlite")]
    pub db: PathBuf,
    /// The tenant whose rows are written (PostgreSQL keys every row by it; a SQLite
    /// file holds one tenant).
    #[arg(long, env = "ORIGIN_TENANT", default_value = contract::DEFAULT_TENANT)]
    pub tenant: String,
    #[command(flatten)]
    pub schema: SchemaConfig,
    /// Format of the input files.
    #[arg(long, value_enum)]
    pub format: ImportFormat,
    /// CSV columns by header name, in any order:
    /// `user=COL,item=COL[,weight=COL][,timestamp=COL]` (other columns are ignored).
    #[arg(long)]
    pub columns: Option<String>,
    /// Skip rows with a weight (rating) below this; the others count as weight 1.
    #[arg(long)]
    pub min_weight: Option<f32>,
    /// CSV field delimiter (one ASCII character; `\t` for tab).
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// Files to import.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

impl ImportConfig {
    /// The tenant, checked.
    pub fn tenant(&self) -> Result<Tenant, ConfigError> {
        parse_tenant(&self.tenant)
    }

    /// The reading options, checked.
    pub fn options(&self) -> Result<crate::import::ImportOptions, crate::import::ImportError> {
        use crate::import::{ColumnMap, ImportError, ImportOptions};
        let mut options = ImportOptions::new(self.format);
        options.columns = self.columns.as_deref().map(ColumnMap::parse).transpose()?;
        options.min_weight = match self.min_weight {
            Some(w) if !w.is_finite() => {
                return Err(ImportError::Columns(format!(
                    "--min-weight {w} is not a number"
                )))
            }
            other => other,
        };
        options.delimiter = match self.delimiter.as_str() {
            "\\t" | "\t" => b'\t',
            d if d.len() == 1 && d.is_ascii() && d != "\"" => d.as_bytes()[0],
            d => {
                return Err(ImportError::Columns(format!(
                    "--delimiter {d:?}: one ASCII character other than a quote"
                )))
            }
        };
        Ok(options)
    }
}

/// `origin import-items FILE` (see `crate::catalogue::import`).
#[derive(Debug, Clone, Args)]
pub struct ImportItemsConfig {
    /// The store: a SQLite file (a path or `sqlite://PATH`, created when missing) or a
    /// PostgreSQL URL (`postgres://…`).
    #[arg(long, env = "ORIGIN_DB", default_value = "var/origin.sqlite")]
    pub db: PathBuf,
    /// The tenant whose items are written (PostgreSQL keys every row by it; a SQLite
    /// file holds one tenant).
    #[arg(long, env = "ORIGIN_TENANT", default_value = contract::DEFAULT_TENANT)]
    pub tenant: String,
    #[command(flatten)]
    pub schema: SchemaConfig,
    /// Format of the file; by default from its extension (`.csv`; `.jsonl`, `.ndjson`).
    #[arg(long, value_enum)]
    pub format: Option<crate::catalogue::import::ItemFileFormat>,
    /// CSV columns by header name: `item_id=COL[,title=COL][,description=COL]
    /// [,categories=COL][,tags=COL][,price=COL][,currency=COL][,available=COL]
    /// [,created_at=COL][,attributes=COL]` (other columns are ignored). Without it, every
    /// header column must be one of those field names.
    #[arg(long)]
    pub columns: Option<String>,
    /// CSV field delimiter (one ASCII character; `\t` for tab).
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// The file to import.
    pub file: PathBuf,
}

impl ImportItemsConfig {
    /// The tenant, checked.
    pub fn tenant(&self) -> Result<Tenant, ConfigError> {
        parse_tenant(&self.tenant)
    }

    /// The reading options, checked.
    pub fn options(
        &self,
    ) -> Result<
        crate::catalogue::import::ItemImportOptions,
        crate::catalogue::import::ItemImportError,
    > {
        use crate::catalogue::import::{ItemColumns, ItemImportError, ItemImportOptions};
        Ok(ItemImportOptions {
            format: self.format,
            columns: self
                .columns
                .as_deref()
                .map(ItemColumns::parse)
                .transpose()?,
            delimiter: match self.delimiter.as_str() {
                "\\t" | "\t" => b'\t',
                d if d.len() == 1 && d.is_ascii() && d != "\"" && d != "|" => d.as_bytes()[0],
                d => {
                    return Err(ItemImportError::Columns(format!(
                        "--delimiter {d:?}: one ASCII character other than a quote or | \
                         (the lists' separator)"
                    )))
                }
            },
        })
    }
}

/// Where `origin publish` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Target {
    /// Edge KV, via `POST {edge-url}/admin/publish`.
    Kv,
    /// The CDN folder given by `--out`.
    Cdn,
    /// Workers KV through Cloudflare's REST bulk API (`--kv-account-id`,
    /// `--kv-namespace-id`, token in `CLOUDFLARE_API_TOKEN`).
    KvApi,
    /// The secondary CDN on S3-compatible object storage (R2, S3): `--s3-endpoint`,
    /// `--s3-bucket`, keys in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    ObjectStorage,
}

#[derive(Debug, Clone, Args)]
pub struct PublishConfig {
    #[command(flatten)]
    pub store: StoreConfig,
    #[command(flatten)]
    pub model: crate::training::ModelConfig,
    #[command(flatten)]
    pub policy: PolicyConfig,
    /// CDN folder: generations go to `OUT/generations/{gen}`, `OUT/current` points at the newest.
    #[arg(long, env = "ORIGIN_PUBLISH_DIR")]
    pub out: Option<PathBuf>,
    /// Edge base URL for KV publishing; needs ADMIN_TOKEN.
    #[arg(long, env = "ORIGIN_EDGE_URL")]
    pub edge_url: Option<String>,
    /// Where to publish [default: cdn when --out is given, plus kv when --edge-url is given].
    #[arg(
        long,
        env = "ORIGIN_PUBLISH_TARGETS",
        value_enum,
        value_delimiter = ','
    )]
    pub targets: Vec<Target>,
    /// Publish only these users (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub users: Vec<String>,
    /// Items per document.
    #[arg(long, env = "ORIGIN_PUBLISH_N", default_value_t = 50)]
    pub n: usize,
    /// Seconds a document is fresh.
    #[arg(long, env = "ORIGIN_FRESH_FOR_S", default_value_t = 300)]
    pub fresh_for_s: u64,
    /// Seconds a document may be served stale after freshness ends.
    #[arg(long, env = "ORIGIN_STALE_FOR_S", default_value_t = 86_400)]
    pub stale_for_s: u64,
    /// CDN generations to keep (older ones are deleted after the flip); 0 keeps all.
    #[arg(long, env = "ORIGIN_KEEP_GENERATIONS", default_value_t = 3)]
    pub keep_generations: usize,
    /// Users computed (and held in memory) at a time.
    #[arg(long, env = "ORIGIN_PUBLISH_CHUNK", default_value_t = 500)]
    pub chunk: usize,
    /// Leave out the items' lists (similar items, bought together; two documents per
    /// item): the edge then asks the origin on every item-list miss. A publish of
    /// `--users` leaves them out too.
    #[arg(long)]
    pub no_item_lists: bool,
    /// Cloudflare account id, for the `kv-api` target.
    #[arg(long, env = "CLOUDFLARE_ACCOUNT_ID")]
    pub kv_account_id: Option<String>,
    /// Workers KV namespace id, for the `kv-api` target.
    #[arg(long, env = "ORIGIN_KV_NAMESPACE_ID")]
    pub kv_namespace_id: Option<String>,
    /// Base URL of Cloudflare's REST API (a local server implementing it in tests).
    #[arg(
        long,
        env = "ORIGIN_KV_API_URL",
        default_value = "https://api.cloudflare.com/client/v4"
    )]
    pub kv_api_url: String,
    /// Calls per second to the KV API at most (Cloudflare allows 1,200 per 5 minutes).
    #[arg(long, env = "ORIGIN_KV_API_RPS", default_value_t = 4.0)]
    pub kv_api_rps: f64,
    /// S3-compatible endpoint for the `object-storage` target (R2:
    /// `https://<account>.r2.cloudflarestorage.com`).
    #[arg(long, env = "ORIGIN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket of the `object-storage` target.
    #[arg(long, env = "ORIGIN_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Region of the bucket (`auto` for R2).
    #[arg(long, env = "ORIGIN_S3_REGION", default_value = "auto")]
    pub s3_region: String,
    /// Prefix of every object the `object-storage` target writes.
    #[arg(long, env = "ORIGIN_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// Write only documents whose content changed since the last whole publish (the
    /// base; `kv-api` and `object-storage` targets only), remembered in --publish-state.
    #[arg(long, env = "ORIGIN_PUBLISH_DELTA")]
    pub delta: bool,
    /// State of delta publishing [default: the database's path + `.publish-state.json`].
    #[arg(long, env = "ORIGIN_PUBLISH_STATE")]
    pub publish_state: Option<PathBuf>,
    /// Longest time deltas are written against one base before a whole publish.
    #[arg(long, env = "ORIGIN_MAX_BASE_AGE_S", default_value_t = 6 * 86_400)]
    pub max_base_age_s: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CdnConfig {
    /// Published folder; `DIR/current` is served.
    #[arg(long, env = "ORIGIN_CDN_DIR", default_value = "var/cdn")]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ORIGIN_CDN_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
}

fn parse_tenant(s: &str) -> Result<Tenant, ConfigError> {
    Tenant::parse(s).map_err(ConfigError::Tenant)
}

fn check_edge_url(url: &Option<String>) -> Result<(), ConfigError> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            Err(ConfigError::EdgeUrl(u.clone()))
        }
        _ => Ok(()),
    }
}

impl ServeConfig {
    /// Checks the tenant, region and edge URL; returns the parsed tenant and region.
    pub fn validate(&self, regions: &RegionMap) -> Result<(Tenant, Region), ConfigError> {
        let tenant = parse_tenant(&self.store.tenant)?;
        let region = Region::parse(&self.region)
            .ok()
            .filter(|r| regions.knows(r))
            .ok_or_else(|| {
                let known: Vec<&str> = regions.regions().iter().map(|r| r.as_str()).collect();
                ConfigError::Region(self.region.clone(), known.join(", "))
            })?;
        check_edge_url(&self.edge_url)?;
        if self.publish_n == 0 || self.publish_n > contract::MAX_N {
            return Err(ConfigError::N(self.publish_n));
        }
        if self.event_group_max == 0 {
            return Err(ConfigError::Zero("--event-group-max"));
        }
        if !(self.model_cache_mb.is_finite() && self.model_cache_mb > 0.0) {
            return Err(ConfigError::NotPositive("--model-cache-mb"));
        }
        if self.publish_state_users == 0 {
            return Err(ConfigError::Zero("--publish-state-users"));
        }
        if self.leader_retry_ms == 0 {
            return Err(ConfigError::Zero("--leader-retry-ms"));
        }
        let db = self.store.db.to_string_lossy();
        if self.event_retention_months > 0
            && !(db.starts_with("postgres://") || db.starts_with("postgresql://"))
        {
            return Err(ConfigError::RetentionNeedsPostgres);
        }
        Ok((tenant, region))
    }
}

impl ServeConfig {
    /// The store's schema options (`--db-user-partitions`).
    pub fn schema_options(&self) -> crate::store::SchemaOptions {
        self.schema.options()
    }

    /// When users may be published: unchanged answers once per `--fresh-for-s`, any user
    /// at most once per `--publish-min-interval-ms`, `--publish-state-users` remembered.
    pub fn publish_budget(&self) -> crate::freshness::BudgetSettings {
        crate::freshness::BudgetSettings {
            refresh_after: std::time::Duration::from_secs(self.fresh_for_s),
            min_interval: std::time::Duration::from_millis(self.publish_min_interval_ms),
            capacity: self.publish_state_users,
        }
    }
}

impl PublishConfig {
    /// The targets to publish to, after defaults.
    pub fn effective_targets(&self) -> Vec<Target> {
        if !self.targets.is_empty() {
            let mut t = self.targets.clone();
            t.dedup();
            return t;
        }
        let mut t = Vec::new();
        if self.out.is_some() {
            t.push(Target::Cdn);
        }
        if self.edge_url.is_some() {
            t.push(Target::Kv);
        }
        t
    }

    /// Checks the flags; returns the tenant and the parsed `--users`.
    pub fn validate(&self, token: Option<&Secret>) -> Result<(Tenant, Vec<UserId>), ConfigError> {
        let tenant = parse_tenant(&self.store.tenant)?;
        if self.n == 0 || self.n > contract::MAX_N {
            return Err(ConfigError::N(self.n));
        }
        if self.chunk == 0 {
            return Err(ConfigError::Zero("--chunk"));
        }
        check_edge_url(&self.edge_url)?;
        let targets = self.effective_targets();
        if targets.is_empty() || (targets.contains(&Target::Cdn) && self.out.is_none()) {
            return Err(ConfigError::CdnNeedsOut);
        }
        if targets.contains(&Target::Kv) && (self.edge_url.is_none() || token.is_none()) {
            return Err(ConfigError::KvNeedsEdge);
        }
        if targets.contains(&Target::KvApi) {
            let ok = |v: &Option<String>| {
                v.as_deref().is_some_and(|s| {
                    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
                })
            };
            if !ok(&self.kv_account_id) || !ok(&self.kv_namespace_id) {
                return Err(ConfigError::KvApiNeedsIds);
            }
            if !(self.kv_api_rps > 0.0 && self.kv_api_rps <= 1000.0) {
                return Err(ConfigError::KvApiRate(self.kv_api_rps.to_string()));
            }
            check_edge_url(&Some(self.kv_api_url.clone()))?;
        }
        if self.delta && !self.users.is_empty() {
            return Err(ConfigError::DeltaWithUsers);
        }
        if targets.contains(&Target::ObjectStorage) {
            if self.s3_bucket.as_deref().is_none_or(str::is_empty) || self.s3_endpoint.is_none() {
                return Err(ConfigError::ObjectStorageNeeds);
            }
            check_edge_url(&self.s3_endpoint)?;
        }
        let users = self
            .users
            .iter()
            .map(|u| UserId::parse(u.trim()).map_err(ConfigError::User))
            .collect::<Result<_, _>>()?;
        Ok((tenant, users))
    }
}

impl DemoDataConfig {
    /// Checks the sizes and the tenant; returns the tenant.
    pub fn validate(&self) -> Result<Tenant, ConfigError> {
        if self.users == 0 {
            return Err(ConfigError::Zero("--users"));
        }
        if self.items == 0 {
            return Err(ConfigError::Zero("--items"));
        }
        parse_tenant(&self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::try_parse_from(["origin", "serve"]).unwrap();
        let Command::Serve(s) = c.command else {
            panic!("not serve")
        };
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.store.db, PathBuf::from("var/origin.sqlite"));
        assert_eq!(s.store.tenant, "default");
        assert_eq!(s.fresh_for_s, 300);
        assert_eq!(s.metrics_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.retrain_every_s, 3600);
        assert_eq!(s.republish_debounce_ms, 200);
        assert_eq!(s.publish_min_interval_ms, 1000);
        assert_eq!(s.publish_state_users, 100_000);
        assert_eq!(s.event_max_future_s, 300);
        assert_eq!(s.event_group_max, 5000);
        assert_eq!(s.otel_endpoint, None);
        assert!(s.db_replicas.is_empty());
        assert_eq!(s.replica_max_lag_ms, 5000);
        assert_eq!(s.publish_every_s, 0);
        assert_eq!(s.keep_generations, 3);
        assert_eq!(s.leader_retry_ms, 2000);
        assert!(s.validate(&RegionMap::builtin()).is_ok());
    }

    #[test]
    fn user_partitions_are_1_to_256_and_retention_needs_postgres() {
        let serve = |args: &[&str]| {
            let mut all = vec!["origin", "serve"];
            all.extend_from_slice(args);
            match Config::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Serve(s)) => Ok(s),
                Ok(_) => panic!("not serve"),
                Err(e) => Err(e.to_string()),
            }
        };
        let s = serve(&[]).unwrap();
        assert_eq!(s.schema.db_user_partitions, None);
        assert_eq!(s.event_retention_months, 0);
        assert_eq!(
            serve(&["--db-user-partitions", "64"])
                .unwrap()
                .schema_options()
                .user_partitions,
            Some(64)
        );
        for bad in ["0", "257", "eight"] {
            let e = serve(&["--db-user-partitions", bad]).unwrap_err();
            assert!(e.contains("--db-user-partitions"), "{e}");
        }
        for cmd in ["import", "demo-data"] {
            let mut args = vec!["origin", cmd, "--db-user-partitions", "300"];
            if cmd == "import" {
                args.extend(["--format", "csv", "f.csv"]);
            }
            assert!(Config::try_parse_from(args).is_err(), "{cmd}");
        }
        let regions = RegionMap::builtin();
        let sqlite = serve(&["--event-retention-months", "6"]).unwrap();
        assert_eq!(
            sqlite.validate(&regions).unwrap_err(),
            ConfigError::RetentionNeedsPostgres
        );
        let pg = serve(&[
            "--event-retention-months",
            "6",
            "--db",
            "postgres://app@db/recs",
        ])
        .unwrap();
        assert!(pg.validate(&regions).is_ok());
    }

    #[test]
    fn replicas_are_repeated_flags_and_a_comma_separated_list() {
        let c = Config::try_parse_from([
            "origin",
            "serve",
            "--db-replica",
            "postgres://r1/db",
            "--db-replica",
            "postgres://r2/db,postgres://r3/db",
        ])
        .unwrap();
        let Command::Serve(s) = c.command else {
            panic!("not serve")
        };
        assert_eq!(
            s.db_replicas,
            ["postgres://r1/db", "postgres://r2/db", "postgres://r3/db"]
        );
    }

    #[test]
    fn an_unknown_region_is_refused() {
        let c = Config::try_parse_from(["origin", "serve", "--region", "mars"]).unwrap();
        let Command::Serve(s) = c.command else {
            panic!("not serve")
        };
        assert!(matches!(
            s.validate(&RegionMap::builtin()),
            Err(ConfigError::Region(..))
        ));
    }

    #[test]
    fn kv_publishing_without_a_token_is_refused() {
        let c = Config::try_parse_from([
            "origin",
            "publish",
            "--edge-url",
            "http://127.0.0.1:1",
            "--targets",
            "kv",
        ])
        .unwrap();
        let Command::Publish(p) = c.command else {
            panic!("not publish")
        };
        assert_eq!(p.validate(None), Err(ConfigError::KvNeedsEdge));
        assert!(p.validate(Some(&Secret::new("t"))).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
