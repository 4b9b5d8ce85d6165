//! Observability: Prometheus metrics on their own port, the request middleware that
//! measures every route, W3C trace context, and the (optional) OpenTelemetry export.
//!
//! Metrics use the `metrics` facade; [`install_metrics`] installs the Prometheus
//! exporter with histogram buckets (so alert rules can take `histogram_quantile`) and a
//! process collector (CPU seconds, resident memory) plus the host's CPU count and
//! memory size, which the CPU and memory alerts divide by. Without an installed
//! recorder (unit tests) every metric call is a no-op.
//!
//! The middleware ([`track`]) accepts an incoming `traceparent` header (or starts a new
//! trace), records the trace id in the request's span, puts the [`TraceContext`] into
//! the request's extensions (handlers pass it on to the edge as a child span), and
//! records latency, status class and the request rate.
//!
//! # Layout
//! - [`TraceContext`]: a parsed `traceparent`.
//! - [`RequestRate`]: requests per second over the last minute, for real-time analytics.
//! - [`Traffic`]: what the middleware keeps in memory (the rate and the latency window
//!   of [`crate::latency`]).
//! - [`track`]: the axum middleware.
//! - [`install_metrics`]: process-wide metrics setup for the binary.
//! - `otel_layer` (feature `otel`): OpenTelemetry span export over OTLP/HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use tracing::Instrument;

/// Buckets of every histogram, in seconds (latency) — wide enough for the 2 s alert.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

/// A W3C trace context (`traceparent: 00-<trace-id>-<parent-id>-<flags>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits: the span this context names.
    pub span_id: String,
    pub sampled: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    loop {
        let s: String = (0..bytes)
            .map(|_| format!("{:02x}", rng.gen::<u8>()))
            .collect();
        if s.bytes().any(|b| b != b'0') {
            return s;
        }
    }
}

impl TraceContext {
    /// Parses a `traceparent` header value; `None` when it is not a valid version-00 one.
    pub fn parse(header: &str) -> Option<Self> {
        let t = contract::trace::TraceParent::parse(header)?;
        Some(TraceContext {
            sampled: t.sampled(),
            trace_id: t.trace_id,
            span_id: t.parent_id,
        })
    }

    /// A new trace with a random id.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: random_hex(16),
            span_id: random_hex(8),
            sampled: true,
        }
    }

    /// The same trace with a new span id: what an outgoing call carries.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: random_hex(8),
            sampled: self.sampled,
        }
    }

    /// The `traceparent` header value.
    pub fn header_value(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Requests per second over the last minute: 60 one-second buckets.
#[derive(Debug)]
pub struct RequestRate {
    /// (second, count) per slot `second % 60`.
    slots: Mutex<[(u64, u64); 60]>,
    total: AtomicU64,
}

impl Default for RequestRate {
    fn default() -> Self {
        RequestRate {
            slots: Mutex::new([(0, 0); 60]),
            total: AtomicU64::new(0),
        }
    }
}

impl RequestRate {
    /// Counts one request at unix second `now`.
    pub fn record(&self, now: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slots) = self.slots.lock() {
            let slot = &mut slots[(now % 60) as usize];
            if slot.0 != now {
                *slot = (now, 0);
            }
            slot.1 += 1;
        }
    }

    /// Average requests per second over the 60 seconds before `now` (inclusive).
    pub fn per_second(&self, now: u64) -> f64 {
        let Ok(slots) = self.slots.lock() else {
            return 0.0;
        };
        let n: u64 = slots
            .iter()
            .filter(|(s, _)| *s + 60 > now && *s <= now)
            .map(|(_, c)| c)
            .sum();
        n as f64 / 60.0
    }

    /// Requests counted since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// What the middleware counts in memory for the analytics routes.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests per second over the last minute (`/v1/analytics/real-time`).
    pub rate: RequestRate,
    /// Latency per route over the last hour (`/v1/analytics/latency`).
    pub latency: crate::latency::LatencyWindow,
}

/// `2xx`, `4xx`, `5xx`, …
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The middleware: trace context in, span with trace id, latency and status metrics.
pub async fn track(
    State(traffic): State<std::sync::Arc<Traffic>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let started_s = crate::snapshot::now_unix();
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let trace = request_trace(&span, incoming.as_ref());
    span.record("trace_id", trace.trace_id.as_str());
    span.record("span_id", trace.span_id.as_str());
    req.extensions_mut().insert(trace);
    traffic.rate.record(started_s);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.record("status", status);
    let class = status_class(status);
    let elapsed = started.elapsed().as_secs_f64();
    span.in_scope(|| tracing::debug!(status, latency_ms = elapsed * 1e3, "answered"));
    traffic.latency.record(&route, started_s, elapsed);
    metrics::histogram!(
        "origin_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.clone(),
    )
    .record(elapsed);
    metrics::counter!(
        "origin_http_requests_total",
        "route" => route,
        "method" => method,
        "status_class" => class,
    )
    .increment(1);
    if status >= 400 {
        metrics::counter!("origin_http_errors_total", "status_class" => class).increment(1);
    }
    resp
}

/// Total memory available to this process: the cgroup limit when one is set, else
/// the host's `MemTotal`.
pub fn memory_limit_bytes() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let host = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, host) {
        (Some(c), Some(h)) => Some(c.min(h)),
        (c, h) => c.or(h),
    }
}

/// Installs the Prometheus exporter serving `/metrics` on `listen`, describes the
/// origin's metrics and starts the process collector. Call once, inside the runtime.
pub fn install_metrics(listen: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| e.to_string())?;
    metrics::describe_histogram!(
        "origin_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Latency of HTTP requests, per route and method."
    );
    metrics::describe_counter!(
        "origin_http_requests_total",
        "HTTP requests answered, per route, method and status class."
    );
    metrics::describe_counter!(
        "origin_tenant_requests_total",
        "Tenant-facing requests per tenant (the busiest by name, the rest `other`)."
    );
    metrics::describe_counter!(
        "origin_http_errors_total",
        "HTTP answers with status 4xx or 5xx, per status class."
    );
    metrics::describe_counter!(
        "origin_events_ingested_total",
        "Events committed to the log, per type."
    );
    metrics::describe_histogram!(
        "origin_event_commit_seconds",
        metrics::Unit::Seconds,
        "Time of one group commit of the event log."
    );
    metrics::describe_histogram!(
        "origin_publish_lag_seconds",
        metrics::Unit::Seconds,
        "Time from an event's commit to its user's republish being done."
    );
    metrics::describe_counter!(
        "origin_republish_total",
        "Per-user republishes after events, per target and result."
    );
    metrics::describe_histogram!(
        "origin_model_train_seconds",
        metrics::Unit::Seconds,
        "Time of a full retrain (load + train)."
    );
    metrics::describe_gauge!(
        "origin_model_info",
        "1 for the model version being served, 0 for versions served before."
    );
    metrics::describe_gauge!("origin_host_cpus", "CPUs available to this process.");
    metrics::describe_gauge!(
        "origin_host_memory_bytes",
        metrics::Unit::Bytes,
        "Memory available to this process (cgroup limit or host total)."
    );
    if let Ok(n) = std::thread::available_parallelism() {
        metrics::gauge!("origin_host_cpus").set(n.get() as f64);
    }
    if let Some(m) = memory_limit_bytes() {
        metrics::gauge!("origin_host_memory_bytes").set(m as f64);
    }
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector.collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            collector.collect();
        }
    });
    Ok(())
}

/// Warns when an OTLP endpoint is configured but this binary was built without the
/// `otel` feature (so no spans are exported; trace ids still appear in the logs and
/// on outgoing calls).
pub fn warn_if_otel_missing(endpoint: Option<&str>) {
    if let (Some(endpoint), false) = (endpoint, cfg!(feature = "otel")) {
        tracing::warn!(
            endpoint,
            "otel feature not compiled: rebuild with `--features otel` to export traces"
        );
    }
}

/// A tracing layer exporting spans over OTLP/HTTP (protobuf) to `endpoint`, e.g.
/// `http://127.0.0.1:4318/v1/traces`, with W3C trace-context propagation.
#[cfg(feature = "otel")]
pub fn otel_layer<S>(endpoint: &str) -> Result<impl tracing_subscriber::Layer<S>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let endpoint = endpoint.to_owned();
    // The blocking HTTP client must not be built on a runtime thread.
    let provider = std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("origin")
                        .build(),
                )
                .build(),
        )
    })
    .join()
    .map_err(|_| "the OTLP exporter setup panicked".to_owned())??;
    let _ = OTEL_PROVIDER.set(provider.clone());
    let tracer = provider.tracer("origin");
    opentelemetry::global::set_tracer_provider(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// The provider [`otel_layer`] installed, kept so [`flush_traces`] can shut it down.
#[cfg(feature = "otel")]
static OTEL_PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();

/// Exports the spans still queued and stops the exporter; a no-op without OpenTelemetry
/// export. Blocks until the export is done: call it outside the async runtime's
/// threads (e.g. in `spawn_blocking`) once the server has stopped.
pub fn flush_traces() {
    #[cfg(feature = "otel")]
    if let Some(provider) = OTEL_PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "flushing OTLP spans at shutdown failed");
        }
    }
}

/// The trace context of a request's span: a child of the incoming context (or a new
/// trace), whose span id names this request in the logs and in outgoing calls.
#[cfg(not(feature = "otel"))]
fn request_trace(_span: &tracing::Span, incoming: Option<&TraceContext>) -> TraceContext {
    incoming.map_or_else(TraceContext::new_root, TraceContext::child)
}

/// The trace context of a request's span. With OpenTelemetry export on, the incoming
/// context becomes the exported span's parent and the exported span's own ids are
/// the ones logged and passed on, so logs, exported spans and outgoing calls agree.
#[cfg(feature = "otel")]
fn request_trace(span: &tracing::Span, incoming: Option<&TraceContext>) -> TraceContext {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(incoming) = incoming {
        let carrier: std::collections::HashMap<String, String> =
            [("traceparent".to_owned(), incoming.header_value())].into();
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        span.set_parent(parent);
    }
    let cx = span.context();
    let otel = cx.span().span_context().clone();
    if otel.is_valid() {
        TraceContext {
            trace_id: otel.trace_id().to_string(),
            span_id: otel.span_id().to_string(),
            sampled: otel.is_sampled(),
        }
    } else {
        // No OpenTelemetry layer installed (no --otel-endpoint).
        incoming.map_or_else(TraceContext::new_root, TraceContext::child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_parses_and_its_child_keeps_the_trace_id() {
        let t =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert_eq!(TraceContext::parse(&c.header_value()).unwrap(), c);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_request_rate_averages_the_last_minute_only() {
        let r = RequestRate::default();
        for _ in 0..30 {
            r.record(1000);
        }
        for _ in 0..90 {
            r.record(1059);
        }
        assert_eq!(r.per_second(1059), 2.0);
        assert_eq!(r.per_second(1060), 1.5, "second 1000 has left the window");
        assert_eq!(r.per_second(2000), 0.0);
        assert_eq!(r.total(), 120);
    }

    #[test]
    fn status_classes_group_by_hundreds() {
        assert_eq!(status_class(202), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
