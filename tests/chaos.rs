//! A bounded chaos run: 2,000 requests over about 20 s from 10 client threads against
//! one stack, while the main thread stops and restarts the origin and the secondary
//! CDN. Counts statuses, sources, latencies and staleness of what was served.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{now_s, Stack, SUBREQUEST_TIMEOUT_MS};

/// No request may take longer: every subrequest is cut at the timeout, and at most
/// the CDN and one origin can time out in one request.
pub const LATENCY_BUDGET: Duration = Duration::from_millis(2 * SUBREQUEST_TIMEOUT_MS + 1000);
const THREADS: usize = 10;
const PER_THREAD: usize = 200;
const SPACING: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Report {
    pub total: usize,
    pub status: BTreeMap<u16, usize>,
    pub status_5xx: usize,
    pub errors: usize,
    pub by_source: BTreeMap<String, usize>,
    pub stale_served: usize,
    pub max_latency: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max_age_s: u64,
    pub staleness_violations: usize,
    pub events: Vec<(f64, String)>,
    pub wall: Duration,
    /// Error bodies seen, with counts.
    pub error_bodies: BTreeMap<String, usize>,
}

struct Sample {
    status: Option<u16>,
    latency: Duration,
    source: String,
    stale: bool,
    age_s: u64,
    violation: bool,
    error: Option<String>,
}

fn one(client: &reqwest::blocking::Client, url: &str) -> Sample {
    let started = Instant::now();
    let resp = client.get(url).send();
    let mut s = Sample {
        status: None,
        latency: Duration::ZERO,
        source: String::new(),
        stale: false,
        age_s: 0,
        violation: false,
        error: None,
    };
    if let Ok(r) = resp {
        s.status = Some(r.status().as_u16());
        let text = r.text().unwrap_or_default();
        if s.status != Some(200) && serde_json::from_str::<serde_json::Value>(&text).is_err() {
            s.error = Some(format!(
                "(not JSON) {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) {
            let now = now_s();
            let field = |k: &str| body[k].as_u64().unwrap_or(0);
            let (generated, fresh, stale_for) = (
                field("generated_at"),
                field("fresh_for_s"),
                field("stale_for_s"),
            );
            s.source = body["source"].as_str().unwrap_or("error").to_string();
            s.stale = body["stale"].as_bool().unwrap_or(false);
            if !body["error"].is_null() {
                s.error = Some(body["error"].to_string());
            }
            if s.status == Some(200) {
                s.age_s = now.saturating_sub(generated);
                let past_stale = now > generated + fresh + stale_for;
                let stale_as_fresh = !s.stale && now > generated + fresh + 1;
                s.violation = past_stale || stale_as_fresh;
            }
        }
    }
    s.latency = started.elapsed();
    s
}

/// Runs the load and the disruptions; returns the counts.
pub fn run(stack: &mut Stack, users: &[String]) -> Report {
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = stack.client.clone();
            let urls: Vec<String> = (0..PER_THREAD)
                .map(|k| {
                    stack.edge_url(&format!(
                        "/v1/recommendations/{}",
                        users[(t * 7919 + k * 31) % users.len()]
                    ))
                })
                .collect();
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(PER_THREAD);
                for (k, url) in urls.iter().enumerate() {
                    let due = start + SPACING * k as u32 + Duration::from_millis(10 * t as u64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    out.push(one(&client, url));
                }
                out
            })
        })
        .collect();

    let mut events = Vec::new();
    let at = |secs: u64| {
        if let Some(wait) =
            (start + Duration::from_secs(secs)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    };
    at(4);
    stack.stop_origin(0);
    events.push((start.elapsed().as_secs_f64(), "origin stopped".to_string()));
    at(8);
    stack.stop_cdn();
    events.push((
        start.elapsed().as_secs_f64(),
        "secondary CDN stopped".to_string(),
    ));
    at(12);
    stack.start_origin(0);
    events.push((
        start.elapsed().as_secs_f64(),
        "origin restarted".to_string(),
    ));
    at(15);
    stack.start_cdn();
    events.push((
        start.elapsed().as_secs_f64(),
        "secondary CDN restarted".to_string(),
    ));

    let samples: Vec<Sample> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("load thread"))
        .collect();
    let mut report = Report {
        total: samples.len(),
        events,
        wall: start.elapsed(),
        ..Report::default()
    };
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    report.p50 = latencies[latencies.len() / 2];
    report.p99 = latencies[latencies.len() * 99 / 100];
    report.max_latency = *latencies.last().unwrap();
    for s in &samples {
        match s.status {
            Some(code) => {
                *report.status.entry(code).or_default() += 1;
                if code >= 500 {
                    report.status_5xx += 1;
                }
            }
            None => report.errors += 1,
        }
        *report.by_source.entry(s.source.clone()).or_default() += 1;
        report.stale_served += s.stale as usize;
        report.max_age_s = report.max_age_s.max(s.age_s);
        report.staleness_violations += s.violation as usize;
        if let Some(e) = &s.error {
            *report.error_bodies.entry(e.clone()).or_default() += 1;
        }
    }
    report
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut m = String::from("| measure | value |\n|---|---|\n");
        m += &format!(
            "| requests | {} in {:.1} s |\n",
            self.total,
            self.wall.as_secs_f64()
        );
        m += &format!("| statuses | {:?} |\n", self.status);
        m += &format!(
            "| transport errors | {} |\n| 5xx | {} |\n",
            self.errors, self.status_5xx
        );
        m += &format!("| served by | {:?} |\n", self.by_source);
        m += &format!("| marked stale | {} |\n", self.stale_served);
        m += &format!(
            "| latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms (budget {} ms) |\n",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max_latency.as_secs_f64() * 1e3,
            LATENCY_BUDGET.as_millis()
        );
        m += &format!(
            "| oldest document served | {} s |\n| staleness violations | {} |\n",
            self.max_age_s, self.staleness_violations
        );
        for (body, n) in &self.error_bodies {
            m += &format!("| error body ×{n} | {body} |\n");
        }
        for (t, e) in &self.events {
            m += &format!("| t = {t:.1} s | {e} |\n");
        }
        m
    }

    /// Writes the markdown table to `target/e2e-reports/{name}.md`.
    pub fn save(&self, name: &str) {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| crate::repo_root().join("target"));
        let dir = target.join("e2e-reports");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.md")), self.markdown());
    }
}
