//! The `origin` binary: parses the configuration, sets up logging and dispatches to the
//! library. See `origin --help`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use contract::RegionMap;
use origin::config::{Command, Config, Secret, Target};
use origin::publish::{
    delta, CdnFolder, EdgeClient, EdgeKv, KvApiSettings, KvRest, ObjectStorage,
    ObjectStorageSettings, PublishJob, PublishTargets,
};
use origin::snapshot::Freshness;
use origin::store::sqlite::Database;
use origin::store::{Location, SchemaOptions, SharedStore};

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Logs to stderr (filter from `RUST_LOG`), plus OpenTelemetry export when built with
/// the `otel` feature and given an endpoint.
fn init_tracing(otel_endpoint: Option<&str>) {
    use tracing_subscriber::prelude::*;
    let registry = tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    #[cfg(feature = "otel")]
    if let Some(endpoint) = otel_endpoint {
        match origin::observability::otel_layer(endpoint) {
            Ok(layer) => {
                registry.with(layer).init();
                tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
            }
            Err(e) => {
                registry.init();
                tracing::error!(endpoint, error = %e, "cannot start the OTLP exporter");
            }
        }
        return;
    }
    registry.init();
    origin::observability::warn_if_otel_missing(otel_endpoint);
}

/// Opens the store `--db` names (a SQLite file, created when missing, or a PostgreSQL
/// database, its schema created with `schema` when new) for `tenant`, for a command that
/// writes it in bulk.
async fn open_for_loading(
    db: &std::path::Path,
    tenant: &str,
    schema: SchemaOptions,
) -> Result<SharedStore> {
    let location = Location::parse(&db.to_string_lossy())?;
    origin::store::open_with(&location, tenant, 1, schema)
        .await
        .with_context(|| format!("opening {}", location.display()))
}

/// How long the exit waits for work left on the runtime's blocking pool once a command
/// is done. `origin serve` has drained its requests by then; what may remain is a
/// training that cannot be cancelled, which must not hold the exit past the shutdown
/// deadline (the next start trains again).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run());
    // Dropping the runtime would wait for every blocking task, however long.
    runtime.shutdown_timeout(EXIT_GRACE);
    result
}

async fn run() -> Result<()> {
    let config = Config::parse();
    init_tracing(match &config.command {
        Command::Serve(c) => c.otel_endpoint.as_deref(),
        _ => None,
    });
    let regions = RegionMap::builtin();
    match config.command {
        Command::Serve(c) => origin::serve::serve(c, regions, shutdown_signal()).await?,
        Command::DemoData(c) => {
            let tenant = c.validate()?;
            let started = Instant::now();
            let store = open_for_loading(&c.db, tenant.as_str(), c.schema.options()).await?;
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(c.users),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let spec = origin::demo_data::DemoSpec {
                users: c.users,
                items: c.items,
                seed: c.seed,
                interactions_per_user: c.interactions_per_user,
                catalogue: c.catalogue,
            };
            let progress = bar.clone();
            let sum = origin::demo_data::generate(&*store, &spec, move |done| {
                progress.set_position(done)
            })
            .await
            .with_context(|| format!("writing demo data into {}", store.location()))?;
            bar.finish_and_clear();
            println!(
                "demo data in {}: {} users, {} items, {} interactions (seed {}) in {:.2}s",
                store.location(),
                sum.users,
                sum.items,
                sum.interactions,
                c.seed,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Import(c) => {
            let started = Instant::now();
            let tenant = c.tenant()?;
            let options = c.options()?;
            let store = open_for_loading(&c.db, tenant.as_str(), c.schema.options()).await?;
            let sum = origin::import::import_files(&*store, &options, &c.files).await?;
            println!(
                "imported {} interactions from {} file(s) into {}: {} new users, {} new items, {} rows below --min-weight skipped, in {:.2}s",
                sum.interactions,
                sum.files,
                store.location(),
                sum.users,
                sum.items,
                sum.below_min_weight,
                started.elapsed().as_secs_f64()
            );
        }
        Command::ImportItems(c) => {
            let started = Instant::now();
            let tenant = c.tenant()?;
            let options = c.options()?;
            let store = open_for_loading(&c.db, tenant.as_str(), c.schema.options()).await?;
            let now = origin::clock::now_unix() as i64;
            let sum =
                origin::catalogue::import::import_items(&*store, &options, &c.file, now).await?;
            println!(
                "imported {} items from {} into {}: {} new, in {:.2}s",
                sum.items,
                c.file.display(),
                store.location(),
                sum.new_items,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Publish(c) => {
            let token = Secret::admin_token_from_env();
            let (tenant, users) = c.validate(token.as_ref())?;
            let targets = c.effective_targets();
            let location = Location::parse(&c.store.db.to_string_lossy())?;
            // The training set and the running A/B experiment, whose variants' models
            // make their users' documents.
            let (set, experiment) = match &location {
                Location::Sqlite(path) => {
                    let file = origin::store::sqlite::file_of(path, tenant.as_str())
                        .with_context(|| format!("opening {}", path.display()))?;
                    let store = Database::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?;
                    tokio::task::block_in_place(|| {
                        anyhow::Ok((store.training_set()?, store.running_experiment()?))
                    })?
                }
                Location::Postgres(_) => {
                    let store = origin::store::open(&location, tenant.as_str(), 1)
                        .await
                        .with_context(|| format!("opening {}", location.display()))?;
                    let read = |e| format!("reading {}: {e}", location.display());
                    (
                        store
                            .training_set()
                            .await
                            .map_err(|e| anyhow::anyhow!(read(e)))?,
                        store
                            .running_experiment()
                            .await
                            .map_err(|e| anyhow::anyhow!(read(e)))?,
                    )
                }
            };
            if let Some(e) = &experiment {
                println!(
                    "experiment {} runs: its {} variants' models make their users' documents",
                    e.name,
                    e.variants.len()
                );
            }
            let freshness = Freshness {
                fresh_for_s: c.fresh_for_s,
                stale_for_s: c.stale_for_s,
            };
            let policy = c.policy.policy();
            let choice = c.model.choice.clone();
            let train: origin::retrain::TrainFn =
                Arc::new(move |data| origin::training::train_or_popularity(data, &choice));
            let snapshot = tokio::task::block_in_place(|| {
                origin::retrain::build_with_experiment(
                    set,
                    tenant.clone(),
                    regions,
                    freshness,
                    &policy,
                    &train,
                    experiment,
                )
            });
            // The tenant's business rules and every user's fatigued items (origin::rules).
            let rules_store = origin::store::open(&location, tenant.as_str(), 1)
                .await
                .with_context(|| format!("opening {}", location.display()))?;
            origin::store::load_rules(&*rules_store, &snapshot.rules)
                .await
                .with_context(|| format!("reading the business rules in {}", location.display()))?;
            let fatigued = origin::store::fatigued_for(
                Some(&rules_store),
                &snapshot.rules.rules(),
                None,
                origin::snapshot::now_unix() as i64,
            )
            .await;
            let mut publish = PublishTargets::default();
            if let (true, Some(out)) = (targets.contains(&Target::Cdn), &c.out) {
                publish = publish.with(Arc::new(
                    CdnFolder::new(out.clone()).keeping(c.keep_generations),
                ));
            }
            if let (true, Some(url), Some(token)) =
                (targets.contains(&Target::Kv), &c.edge_url, token)
            {
                publish = publish.with(Arc::new(EdgeKv::new(EdgeClient::new(url, token))));
            }
            if targets.contains(&Target::KvApi) {
                let token = std::env::var("CLOUDFLARE_API_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .context(
                        "the kv-api target needs the CLOUDFLARE_API_TOKEN environment variable",
                    )?;
                let mut settings = KvApiSettings::new(
                    &c.kv_api_url,
                    c.kv_account_id.as_deref().unwrap_or_default(),
                    c.kv_namespace_id.as_deref().unwrap_or_default(),
                    Secret::new(token),
                );
                settings.requests_per_second = c.kv_api_rps;
                publish = publish.with(Arc::new(KvRest::new(settings)));
            }
            if targets.contains(&Target::ObjectStorage) {
                let env =
                    |name: &str| {
                        std::env::var(name).ok().filter(|v| !v.is_empty()).with_context(|| {
                        format!("the object-storage target needs the {name} environment variable")
                    })
                    };
                let storage = ObjectStorage::new(ObjectStorageSettings {
                    endpoint: c.s3_endpoint.clone().unwrap_or_default(),
                    bucket: c.s3_bucket.clone().unwrap_or_default(),
                    region: c.s3_region.clone(),
                    access_key: env("AWS_ACCESS_KEY_ID")?,
                    secret_key: Secret::new(env("AWS_SECRET_ACCESS_KEY")?),
                    prefix: c.s3_prefix.clone(),
                    keep_generations: c.keep_generations,
                })?;
                publish = publish.with(Arc::new(storage));
            }
            // Delta publishing: a delta against the last whole publish, or a whole one
            // that becomes the next base (origin::publish::delta).
            let state_path = c.publish_state.clone().unwrap_or_else(|| {
                let mut p = c.store.db.clone().into_os_string();
                p.push(".publish-state.json");
                std::path::PathBuf::from(p)
            });
            let target_names: Vec<String> = publish.iter().map(|t| t.name().to_owned()).collect();
            let published_at = origin::snapshot::now_unix();
            let plan = match c.delta {
                false => None,
                true => Some(delta::plan(
                    delta::load(&state_path)?.as_ref(),
                    tenant.as_str(),
                    &target_names,
                    published_at,
                    c.fresh_for_s.saturating_add(c.stale_for_s),
                    c.max_base_age_s,
                )),
            };
            let bar = progress_bar();
            let progress_bar = bar.clone();
            // `--users` publishes those users' documents only.
            let item_lists = !c.no_item_lists && users.is_empty();
            let job = PublishJob {
                tenant: tenant.clone(),
                delta: plan.as_ref().and_then(|p| p.delta.clone()),
                keep_until: plan.as_ref().map(|p| p.keep_until),
                fatigued: Arc::new(fatigued),
                n: c.n,
                users: (!users.is_empty()).then_some(users),
                chunk: c.chunk,
                item_lists,
                targets: publish,
                progress: Some(Box::new(move |p| {
                    progress_bar.set_length(p.total as u64);
                    progress_bar.set_position(p.done as u64);
                })),
            };
            let report = origin::publish::publish_all(Arc::new(snapshot), job).await;
            bar.finish_and_clear();
            let report = report?;
            if let Some(plan) = plan.as_ref().filter(|p| p.delta.is_none()) {
                let state = delta::after_whole(
                    &report,
                    tenant.as_str(),
                    &target_names,
                    published_at,
                    plan.keep_until,
                );
                delta::save(&state_path, &state)?;
            }
            if let Some(base) = &report.pointer.base {
                println!(
                    "delta against {}: {} users unchanged, {} item lists unchanged, not written",
                    base.as_str(),
                    report.unchanged,
                    report.unchanged_item_lists
                );
            }
            println!(
                "published generation {}: {} users ({:.0} users/s), {} item lists, {} CDN files, {} KV documents, {} KV API documents, {} objects, {} popular lists, {} old generations pruned, in {:.2}s",
                report.generation,
                report.users,
                report.users_per_second(),
                report.item_lists,
                report.documents("cdn"),
                report.documents("kv"),
                report.documents("kv-api"),
                report.documents("object-storage"),
                report.popular_lists,
                report.pruned_generations(),
                report.elapsed.as_secs_f64()
            );
        }
        Command::Replay(c) => {
            let started = Instant::now();
            let location = Location::parse(&c.db.to_string_lossy())?;
            let tenant =
                contract::Tenant::parse(&c.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let store = origin::store::open(&location, tenant.as_str(), 1)
                .await
                .with_context(|| format!("opening {}", location.display()))?;
            let report = store
                .replay()
                .await
                .with_context(|| format!("replaying the event log in {}", location.display()))?;
            println!(
                "replayed {} events ({} interactions, last seq {}) into every projection of {} in {:.2}s",
                report.events,
                report.interactions,
                report.last_seq,
                location.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Cdn(c) => {
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("binding {}", c.listen))?;
            tracing::info!(addr = %listener.local_addr()?, dir = %c.dir.display(), "cdn listening");
            origin::cdn::run_cdn(listener, c.dir, shutdown_signal()).await?;
        }
        Command::Eval(a) => tokio::task::block_in_place(|| origin::eval::cli::run(a))?,
        Command::Split(a) => tokio::task::block_in_place(|| origin::eval::cli::run_split(a))?,
        Command::Synth(a) => tokio::task::block_in_place(|| origin::eval::cli::run_synth(a))?,
        Command::Tenants(a) => {
            let location = Location::parse(&a.db.to_string_lossy())?;
            let registry = origin::store::open_tenants(&location)
                .await
                .with_context(|| format!("opening {}", location.display()))?;
            let tenants = origin::tenants::Tenants::new(registry);
            let now = origin::snapshot::now_unix() as i64;
            print!("{}", origin::tenants::cli::run(&a, &tenants, now).await?);
        }
    }
    Ok(())
}

/// The bulk publish's progress bar on stderr.
fn progress_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} publish {bar:40} {pos}/{len} users {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
