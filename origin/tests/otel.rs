//! OpenTelemetry export, end to end: the real `origin serve` binary built with the
//! `otel` feature sends its request spans over OTLP/HTTP (protobuf) to a receiver in
//! this test, which decodes them with the OTLP protobuf types.
//!
//! Checks that a request carrying a W3C `traceparent` is exported as a `request` span
//! of the same trace, child of the caller's span, with the route and status as
//! attributes, and that the span id in the logs' fields is the exported span's id. The
//! exporter's schedule is set to a minute, so the span can only arrive through the
//! flush at shutdown (SIGTERM): spans queued when the origin stops are not lost.
//!
//! Needs `--features otel` (`make test` passes it); without the feature this file
//! compiles to nothing.
#![cfg(feature = "otel")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

mod common;
use common::free_port;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// Spans received, with the service name of their resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP trace receiver on a free port: decodes each export and keeps its spans.
async fn start_receiver() -> (String, Received, Arc<Mutex<Vec<String>>>) {
    let received: Received = Arc::default();
    let content_types: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, c) = (received.clone(), content_types.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let (r, c) = (r.clone(), c.clone());
            async move {
                if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
                    c.lock().unwrap().push(ct.to_owned());
                }
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| string_value(kv.value.as_ref()?.value.as_ref()?))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            r.lock().unwrap().push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1/traces"), received, content_types)
}

fn string_value(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(kv.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Origin(Child);

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_origin(db: &Path, log: &Path, port: u16, endpoint: &str) -> Origin {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["serve", "--db"])
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--retrain-every-s", "0"])
        .args(["--otel-endpoint", endpoint])
        .env_remove("ADMIN_TOKEN")
        .env_remove("ORIGIN_EDGE_URL")
        .env_remove("ORIGIN_PUBLISH_DIR")
        // No scheduled export during the test: only the shutdown flush sends spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start origin");
    Origin(child)
}

#[tokio::test]
async fn request_spans_are_exported_over_otlp_with_the_callers_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (
        dir.path().join("origin.sqlite"),
        dir.path().join("origin.log"),
    );
    let (endpoint, received, content_types) = start_receiver().await;
    let port = free_port();
    let mut origin = start_origin(&db, &log, port, &endpoint);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = origin.0.try_wait() {
            panic!(
                "origin exited early ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "origin did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let resp = client
        .get(format!("{base}/v1/analytics/latency?range=1m"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert!(
        received.lock().unwrap().is_empty(),
        "nothing is exported before the shutdown"
    );
    // SAFETY: sending a signal to our own child process by its pid.
    let rc = unsafe { libc::kill(origin.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = origin.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "origin did not stop within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "origin exited with {exit}:\n{log_text}");
    let (service, span) = received
        .lock()
        .unwrap()
        .iter()
        .find(|(_, s)| hex(&s.trace_id) == TRACE_ID)
        .cloned()
        .unwrap_or_else(|| {
            panic!("no span of trace {TRACE_ID} exported by the shutdown; origin log:\n{log_text}")
        });
    assert_eq!(service, "origin");
    assert_eq!(span.name, "request");
    assert_eq!(
        hex(&span.parent_span_id),
        CALLER_SPAN_ID,
        "the caller's span is the parent"
    );
    assert_ne!(hex(&span.span_id), CALLER_SPAN_ID);
    assert_eq!(
        attribute(&span, "route").as_deref(),
        Some("/v1/analytics/latency")
    );
    assert_eq!(attribute(&span, "method").as_deref(), Some("GET"));
    assert_eq!(attribute(&span, "status").as_deref(), Some("200"));
    assert_eq!(
        attribute(&span, "trace_id").as_deref(),
        Some(TRACE_ID),
        "the logged trace id is the exported one"
    );
    assert_eq!(
        attribute(&span, "span_id"),
        Some(hex(&span.span_id)),
        "the logged span id is the exported span's"
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert!(
        content_types
            .lock()
            .unwrap()
            .iter()
            .all(|ct| ct == "application/x-protobuf"),
        "{:?}",
        content_types.lock().unwrap()
    );
}
