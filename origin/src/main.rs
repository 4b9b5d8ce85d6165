//! The `origin` binary: parses the configuration, sets up logging and dispatches to the
//! library. See `origin --help`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use contract::RegionMap;
use origin::config::{Command, Config, Secret, Target};
use origin::event_log::EventLog;
use origin::freshness::{PublishGate, PublishHealth, Republisher, Targets};
use origin::live::Live;
use origin::publish::{CdnFolder, EdgeClient, PublishJob};
use origin::retrain::Retrainer;
use origin::snapshot::{Freshness, Snapshot};
use origin::store::Store;
use origin::AppState;

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

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config::parse();
    init_tracing(match &config.command {
        Command::Serve(c) => c.otel_endpoint.as_deref(),
        _ => None,
    });
    let regions = RegionMap::builtin();
    match config.command {
        Command::Serve(c) => {
            let (tenant, region) = c.validate(&regions)?;
            // Not fatal: several origins on one host (tests, dev) must not fail on the
            // shared default port; the API matters more than its metrics.
            match origin::observability::install_metrics(c.metrics_listen) {
                Ok(()) => tracing::info!(addr = %c.metrics_listen, "metrics listening"),
                Err(e) => tracing::error!(
                    addr = %c.metrics_listen,
                    error = %e,
                    "metrics exporter not started; set --metrics-listen to a free address"
                ),
            }
            let store = Store::open(&c.store.db)
                .with_context(|| format!("opening {}", c.store.db.display()))?;
            let freshness = Freshness {
                fresh_for_s: c.fresh_for_s,
                stale_for_s: c.stale_for_s,
            };
            let choice = c.model.choice.clone();
            let train: origin::retrain::TrainFn =
                Arc::new(move |data| origin::training::train_or_popularity(data, &choice));
            let training = Instant::now();
            let snapshot = tokio::task::block_in_place(|| {
                Snapshot::build(&store, tenant.clone(), regions.clone(), freshness, |data| {
                    train(data)
                })
            })?;
            drop(store);
            metrics::histogram!("origin_model_train_seconds")
                .record(training.elapsed().as_secs_f64());
            origin::retrain::record_model_version(None, &snapshot.model_version());
            let log = EventLog::open(&c.store.db, c.event_group_max)
                .with_context(|| format!("opening the event log in {}", c.store.db.display()))?;
            let mut state = AppState::new(Arc::new(snapshot), region)
                .with_publish_n(c.publish_n)
                .with_publish_gate(PublishGate::new(c.publish_budget()));
            let token = Secret::admin_token_from_env();
            match (&c.edge_url, token.clone()) {
                (Some(url), Some(token)) => {
                    tracing::info!(edge = %url, "publish on miss to edge KV");
                    state = state.with_edge(EdgeClient::new(url, token));
                }
                (Some(_), None) => {
                    tracing::warn!(
                        "--edge-url given but ADMIN_TOKEN is not set; not publishing to KV"
                    )
                }
                _ => {}
            }
            if let Some(dir) = c.publish_dir.clone() {
                tracing::info!(dir = %dir.display(), "publish on miss to CDN folder");
                state = state.with_publish_dir(dir);
            }
            let retrainer = Arc::new(Retrainer::new(
                c.store.db.clone(),
                tenant,
                regions,
                freshness,
                train,
                state.snapshot.clone(),
            ));
            if c.retrain_every_s > 0 {
                origin::retrain::spawn_schedule(
                    retrainer.clone(),
                    std::time::Duration::from_secs(c.retrain_every_s),
                );
            }
            let health = Arc::new(PublishHealth::default());
            let republisher = (state.edge.is_some() || state.cdn.is_some()).then(|| {
                Republisher::spawn(
                    Targets {
                        log: log.clone(),
                        snapshot: state.snapshot.clone(),
                        edge: state.edge.clone(),
                        cdn: state.cdn.clone(),
                        region: state.region.clone(),
                        publish_n: state.publish_n,
                        health: health.clone(),
                        gate: state.publish_gate.clone(),
                    },
                    std::time::Duration::from_millis(c.republish_debounce_ms),
                )
            });
            if token.is_none() {
                tracing::warn!("ADMIN_TOKEN is not set: /v1/admin/* and edge reports answer 503");
            }
            state = state.with_live(Live {
                log,
                republisher,
                retrainer: Some(retrainer),
                admin_token: token,
                max_future_s: i64::from(c.event_max_future_s),
                health,
            });
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("binding {}", c.listen))?;
            tracing::info!(addr = %listener.local_addr()?, "origin listening");
            origin::run(listener, state, shutdown_signal()).await?;
            // Spans still queued for OTLP export go out before the process ends.
            tokio::task::spawn_blocking(origin::observability::flush_traces).await?;
        }
        Command::DemoData(c) => {
            c.validate()?;
            let started = Instant::now();
            let mut store =
                Store::open(&c.db).with_context(|| format!("opening {}", c.db.display()))?;
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(c.users),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let spec = origin::demo_data::DemoSpec {
                users: c.users,
                items: c.items,
                seed: c.seed,
                interactions_per_user: c.interactions_per_user,
            };
            let sum = tokio::task::block_in_place(|| {
                origin::demo_data::generate(&mut store, &spec, |done| bar.set_position(done))
            })?;
            bar.finish_and_clear();
            println!(
                "demo data in {}: {} users, {} items, {} interactions (seed {}) in {:.2}s",
                c.db.display(),
                sum.users,
                sum.items,
                sum.interactions,
                c.seed,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Import(c) => {
            let started = Instant::now();
            let mut store =
                Store::open(&c.db).with_context(|| format!("opening {}", c.db.display()))?;
            let sum = tokio::task::block_in_place(|| {
                origin::import::import_files(&mut store, c.format, &c.files)
            })?;
            println!(
                "imported {} interactions from {} file(s) into {}: {} new users, {} new items, in {:.2}s",
                sum.interactions,
                sum.files,
                c.db.display(),
                sum.users,
                sum.items,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Publish(c) => {
            let token = Secret::admin_token_from_env();
            let (tenant, users) = c.validate(token.as_ref())?;
            let targets = c.effective_targets();
            let store = Store::open(&c.store.db)
                .with_context(|| format!("opening {}", c.store.db.display()))?;
            let freshness = Freshness {
                fresh_for_s: c.fresh_for_s,
                stale_for_s: c.stale_for_s,
            };
            let snapshot = tokio::task::block_in_place(|| {
                Snapshot::build(&store, tenant.clone(), regions, freshness, |data| {
                    origin::training::train_or_popularity(data, &c.model.choice)
                })
            })?;
            drop(store);
            let job = PublishJob {
                tenant,
                n: c.n,
                users: (!users.is_empty()).then_some(users),
                chunk: c.chunk,
                cdn: targets
                    .contains(&Target::Cdn)
                    .then(|| c.out.clone().map(CdnFolder::new))
                    .flatten(),
                kv: match (targets.contains(&Target::Kv), &c.edge_url, token) {
                    (true, Some(url), Some(token)) => Some(EdgeClient::new(url, token)),
                    _ => None,
                },
                progress: true,
                keep_generations: c.keep_generations,
            };
            let report = origin::publish::publish_all(Arc::new(snapshot), job).await?;
            println!(
                "published generation {}: {} users ({:.0} users/s), {} CDN files, {} KV documents, {} popular lists, {} old generations pruned, in {:.2}s",
                report.generation,
                report.users,
                report.users_per_second(),
                report.cdn_files,
                report.kv_documents,
                report.popular_lists,
                report.pruned_generations,
                report.elapsed.as_secs_f64()
            );
        }
        Command::Replay(c) => {
            let started = Instant::now();
            let report = tokio::task::block_in_place(|| origin::event_log::replay(&c.db))
                .with_context(|| format!("replaying the event log in {}", c.db.display()))?;
            println!(
                "replayed {} events ({} interactions, last seq {}) into every projection of {} in {:.2}s",
                report.events,
                report.interactions,
                report.last_seq,
                c.db.display(),
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
    }
    Ok(())
}
