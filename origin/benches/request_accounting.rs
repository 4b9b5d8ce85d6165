//! What the request middleware costs per request for latency accounting: recording one
//! latency into the in-memory window of `/v1/analytics/latency` (a DDSketch per 10 s
//! slot and route behind a mutex), against recording it into the Prometheus histogram
//! the middleware also feeds (`metrics-exporter-prometheus`), the peer in the same run.
//! Run: `cargo bench -p origin --bench request_accounting`.

use std::hint::black_box;

use criterion::Criterion;
use origin::latency::LatencyWindow;

const ROUTES: [&str; 4] = [
    "/v1/recommendations/{user}",
    "/v1/events",
    "/v1/analytics/real-time",
    "/health",
];

/// Latencies spread over 0.1 ms – 50 ms, like a mix of cache misses and fast routes.
fn latency(i: u64) -> f64 {
    0.0001 * (1.0 + (i % 500) as f64)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_accounting");

    let window = LatencyWindow::default();
    let mut i = 0u64;
    group.bench_function("latency_window_record", |b| {
        b.iter(|| {
            i += 1;
            // A new 10 s slot every 100,000 requests: slot turnover is included.
            window.record(
                black_box(ROUTES[(i % 4) as usize]),
                1_764_000_000 + i / 10_000,
                black_box(latency(i)),
            );
        })
    });

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(origin::observability::LATENCY_BUCKETS)
        .unwrap()
        .build_recorder();
    let mut j = 0u64;
    metrics::with_local_recorder(&recorder, || {
        group.bench_function("prometheus_histogram_record", |b| {
            b.iter(|| {
                j += 1;
                metrics::histogram!(
                    "origin_http_request_duration_seconds",
                    "route" => black_box(ROUTES[(j % 4) as usize]),
                    "method" => "GET",
                )
                .record(black_box(latency(j)));
            })
        });
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
