//! Single on-demand recommendation latency at MovieLens-1M scale (6,040 users × 3,706
//! items, ~1M interactions, synthetic), for every model.
//!
//! Criterion measures the mean; before it, a plain loop times 5,000 single queries (one
//! per user, round-robin) per model and prints p50/p99/max, since tail latency is the
//! target (`p99 < 2 ms`). Run: `cargo bench -p origin --bench recommend`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use origin::engine::{self, synthetic::synthetic, ModelSpec};
use origin::model::{ItemIdx, Query, Recommender};

const USERS: usize = 6_040;
const ITEMS: usize = 3_706;
const MEAN_PER_USER: usize = 165;

struct Setup {
    models: Vec<Arc<dyn Recommender>>,
    histories: Vec<Vec<(ItemIdx, f32)>>,
}

fn setup() -> Setup {
    let data = synthetic(USERS, ITEMS, MEAN_PER_USER, 42);
    eprintln!(
        "data: {} users × {} items, {} interactions",
        data.n_users,
        data.n_items,
        data.interactions.len()
    );
    let histories = engine::histories(&data);
    let specs = [
        ModelSpec::Popularity { regional: true },
        ModelSpec::ItemKnn {
            k: 100,
            shrink: 10.0,
        },
        ModelSpec::UserKnn { k: 50 },
        ModelSpec::Ease {
            lambda: 500.0,
            alpha: 0.0,
        },
        ModelSpec::default_for(engine::ModelKind::Dlae),
        ModelSpec::default_for(engine::ModelKind::Rp3beta),
        ModelSpec::default_for(engine::ModelKind::Gfcf),
        ModelSpec::default_for(engine::ModelKind::Als),
        ModelSpec::Content,
        ModelSpec::default_for(engine::ModelKind::Hybrid),
        // The blend `origin eval --model auto` fits on MovieLens 100K (docs/benchmarks.md).
        ModelSpec::Hybrid {
            parts: vec![
                (
                    ModelSpec::Als {
                        factors: 64,
                        reg: 30.0,
                        alpha: 3.0,
                        iterations: 15,
                        seed: 42,
                    },
                    0.55,
                ),
                (
                    ModelSpec::Dlae {
                        lambda: 200.0,
                        dropout: 0.5,
                    },
                    0.24,
                ),
                (
                    ModelSpec::Gfcf {
                        alpha: 0.3,
                        k: 64,
                        sharpen: 0.0,
                        seed: 42,
                    },
                    0.21,
                ),
            ],
        },
    ];
    let models = specs
        .iter()
        .map(|s| {
            let t = Instant::now();
            let m = engine::build(s, &data).expect("model builds");
            eprintln!("train: {} in {:.2}s", m.name(), t.elapsed().as_secs_f64());
            m
        })
        .collect();
    Setup { models, histories }
}

fn query(h: &[(ItemIdx, f32)]) -> Query<'_> {
    Query {
        history: h,
        n: 20,
        exclude_seen: true,
        context_item: None,
        region: Some("europe"),
        allowed: None,
    }
}

/// CPU time of this thread in µs: unlike wall time, it excludes time the thread spent
/// preempted by other processes (this machine is shared, so both are reported).
fn thread_cpu_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

fn latency_report(s: &Setup) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "single recommend (top 20), 5,000 queries per model; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| model | wall p50 µs | wall p99 µs | wall max µs | CPU p50 µs | CPU p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for m in &s.models {
        for h in s.histories.iter().take(200) {
            black_box(m.recommend(&query(h)));
        }
        let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..5_000)
            .map(|i| {
                let h = &s.histories[(i * 7) % s.histories.len()];
                let c = thread_cpu_us();
                let t = Instant::now();
                black_box(m.recommend(&query(h)));
                (t.elapsed().as_secs_f64() * 1e6, thread_cpu_us() - c)
            })
            .unzip();
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let at = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            m.name(),
            at(&wall, 0.50),
            at(&wall, 0.99),
            wall[wall.len() - 1],
            at(&cpu, 0.50),
            at(&cpu, 0.99),
        );
    }
}

fn main() {
    let s = setup();
    latency_report(&s);
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    let mut group = c.benchmark_group("recommend_top20");
    for m in &s.models {
        let mut i = 0usize;
        group.bench_function(m.name(), |b| {
            b.iter(|| {
                i = (i + 7) % s.histories.len();
                black_box(m.recommend(&query(&s.histories[i])))
            })
        });
    }
    group.finish();
    c.final_summary();
}
