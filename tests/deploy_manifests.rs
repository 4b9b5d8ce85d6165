//! The origin's container image and Kubernetes manifests (`deploy/`), checked offline:
//! - every manifest passes `kubernetes-validate --strict` (PyPI; `scripts/setup.sh`
//!   installs it into `target/tools-venv`) against the oldest and newest Kubernetes this
//!   project supports, and so does what `kubectl kustomize` renders when kubectl is
//!   installed;
//! - what the validator cannot see: the VerticalPodAutoscaler (a CRD it has no schema
//!   for) only recommends and targets the Deployment; the HPA scales that Deployment on
//!   CPU and on a request-rate metric the prometheus-adapter rule serves from a counter
//!   the origin really exports; probes, Service, PDB and ConfigMap agree with the pod's
//!   labels and ports; the grace period outlasts the drain; the Secret example holds
//!   placeholders only and is never applied;
//! - the Dockerfile builds `-p origin --locked` from a copy of the workspace that loads,
//!   and runs as a numeric non-root user; the origin links only what its runtime image
//!   (distroless/cc) has.
//!
//! No Docker engine runs where the tests run, so the image itself is not built here.
//! Without `kubernetes-validate` the validation test skips with a message, except when
//! `CI` is set, where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::repo_root;
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions the manifests must be valid for: 1.30 is the first where the
/// preStop `sleep` action is on by default; the other is the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/k8s")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document in `text`, as JSON values.
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The manifest files of deploy/k8s (every `*.yaml` but the kustomization).
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    assert!(files.len() >= 7, "deploy/k8s has only {files:?}");
    files
}

/// Every object of deploy/k8s, with the file it is in.
fn objects() -> Vec<(String, Value)> {
    manifest_files()
        .iter()
        .flat_map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            documents(&read(p), &name)
                .into_iter()
                .map(move |v| (name.clone(), v))
        })
        .collect()
}

/// The one object of `kind`.
fn the(kind: &str) -> Value {
    let found: Vec<Value> = objects()
        .into_iter()
        .filter(|(_, o)| o["kind"] == kind)
        .map(|(_, o)| o)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} in deploy/k8s");
    found.into_iter().next().unwrap()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), str_of(v, k).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `sub` is not empty and every pair of it is in `of`.
fn selects(sub: &BTreeMap<String, String>, of: &BTreeMap<String, String>) -> bool {
    !sub.is_empty() && sub.iter().all(|(k, v)| of.get(k) == Some(v))
}

/// The origin container of the Deployment.
fn origin_container(deployment: &Value) -> Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    containers
        .iter()
        .find(|c| c["name"] == "origin")
        .cloned()
        .expect("a container named origin")
}

/// The port a listen address (`0.0.0.0:8080`) binds; also asserts it is every interface.
fn listen_port(addr: &str, what: &str) -> u64 {
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{what}={addr}"));
    assert!(
        host == "0.0.0.0" || host == "[::]",
        "{what}={addr}: a pod must listen on every interface, or probes and the Service cannot reach it"
    );
    port.parse().unwrap_or_else(|_| panic!("{what}={addr}"))
}

/// Mebibytes in a Kubernetes memory quantity (`3Gi`, `512Mi`).
fn mebibytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    match unit {
        "Gi" => n * 1024,
        "Mi" => n,
        _ => panic!("use Mi or Gi in the manifests, not {q}"),
    }
}

/// The `kubernetes-validate` to run: `KUBERNETES_VALIDATE`, else the one
/// `scripts/setup.sh` installs, else one on PATH. `None` (with the reason printed) when
/// there is none outside CI; in CI a missing validator fails the test.
fn kubernetes_validate() -> Option<PathBuf> {
    let candidates = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo_root().join("target/tools-venv/bin/kubernetes-validate")])
        .chain([PathBuf::from("kubernetes-validate")]);
    for candidate in candidates {
        if let Ok(out) = Command::new(&candidate).arg("--version").output() {
            if out.status.success() {
                return Some(candidate);
            }
        }
    }
    let reason = "kubernetes-validate is not installed (scripts/setup.sh puts it in \
                  target/tools-venv; or set KUBERNETES_VALIDATE to its path)";
    assert!(std::env::var_os("CI").is_none(), "CI is set and {reason}");
    println!("skipped: {reason}");
    None
}

/// Runs the validator on `files` for `version`; returns (success, output).
fn validate(tool: &Path, version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let files = manifest_files();
    for version in KUBERNETES_VERSIONS {
        let (ok, said) = validate(&tool, version, &files);
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{said}");
        // Everything but the VPA (a CRD) was checked against a schema, not let through.
        for (file, object) in objects() {
            let kind = str_of(&object["kind"], "kind");
            let name = str_of(&object["metadata"]["name"], "metadata.name");
            let passed = format!(
                "{file} passed for resource {}/{name}",
                kind.to_ascii_lowercase()
            );
            if kind == "VerticalPodAutoscaler" {
                continue;
            }
            assert!(
                said.contains(&passed),
                "no '{passed}' for {version}:\n{said}"
            );
        }
        let unknown: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
            .filter(|l| !l.contains("kind VerticalPodAutoscaler"))
            .collect();
        assert!(unknown.is_empty(), "kinds without a schema: {unknown:?}");
    }

    // The validator really is strict: a misspelt probe field is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("deployment.yaml");
    let text = read(&k8s_dir().join("deployment.yaml"));
    assert!(text.contains("path: /health"));
    std::fs::write(&broken, text.replacen("path: /health", "pathh: /health", 1)).unwrap();
    let (ok, said) = validate(&tool, KUBERNETES_VERSIONS[1], &[broken]);
    assert!(!ok, "a misspelt field passed:\n{said}");
    assert!(said.contains("pathh"), "{said}");

    // What `kubectl apply -k` would send (namespace set, image tag applied) is valid too.
    match Command::new("kubectl")
        .args(["kustomize"])
        .arg(k8s_dir())
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered = dir.path().join("rendered.yaml");
            std::fs::write(&rendered, &out.stdout).unwrap();
            let objects = documents(&String::from_utf8_lossy(&out.stdout), "rendered");
            assert_eq!(
                objects.len(),
                7,
                "kustomize rendered {} objects",
                objects.len()
            );
            for o in objects.iter().filter(|o| o["kind"] != "Namespace") {
                assert_eq!(o["metadata"]["namespace"], "edge-recs", "{o}");
            }
            for version in KUBERNETES_VERSIONS {
                let (ok, said) = validate(&tool, version, std::slice::from_ref(&rendered));
                assert!(ok, "rendered, -k {version}:\n{said}");
            }
        }
        Err(e) => println!("kubectl kustomize not checked: kubectl is not installed ({e})"),
    }
}

#[test]
fn the_vpa_only_recommends_and_targets_the_deployment() {
    let vpa = the("VerticalPodAutoscaler");
    let deployment = the("Deployment");
    assert_eq!(vpa["apiVersion"], "autoscaling.k8s.io/v1");
    assert_eq!(
        vpa["spec"]["targetRef"],
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        })
    );
    assert_eq!(vpa["spec"]["updatePolicy"]["updateMode"], "Off");
    // Quoted: Kubernetes reads YAML 1.1, where a bare Off is the boolean false.
    assert!(
        read(&k8s_dir().join("vpa.yaml")).contains("updateMode: \"Off\""),
        "updateMode must be the quoted string \"Off\""
    );
    let container = origin_container(&deployment);
    let policies = vpa["spec"]["resourcePolicy"]["containerPolicies"]
        .as_array()
        .expect("containerPolicies");
    for policy in policies {
        assert_eq!(policy["containerName"], container["name"], "{policy}");
        let (min, max) = (
            &policy["minAllowed"]["memory"],
            &policy["maxAllowed"]["memory"],
        );
        assert!(
            mebibytes(str_of(min, "minAllowed")) < mebibytes(str_of(max, "maxAllowed")),
            "{policy}"
        );
    }
}

#[test]
fn the_hpa_scales_the_deployment_on_cpu_and_a_request_rate_the_origin_exports() {
    let hpa = the("HorizontalPodAutoscaler");
    let deployment = the("Deployment");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["apiVersion"], "apps/v1");
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    let min = hpa["spec"]["minReplicas"].as_u64().expect("minReplicas");
    let max = hpa["spec"]["maxReplicas"].as_u64().expect("maxReplicas");
    assert!(min >= 2 && max > min, "replicas {min}..{max}");
    // The HPA owns the count: a `replicas` in the Deployment would reset it on apply.
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the Deployment sets replicas; leave them to the HPA"
    );

    let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
    let cpu = metrics
        .iter()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
        .expect("a CPU metric");
    assert_eq!(cpu["resource"]["target"]["type"], "Utilization");
    let utilization = cpu["resource"]["target"]["averageUtilization"]
        .as_u64()
        .unwrap();
    assert!(
        (30..=90).contains(&utilization),
        "CPU target {utilization}%"
    );
    // Utilization is relative to the request: the container must request CPU.
    let container = origin_container(&deployment);
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "no CPU request"
    );
    let rate = metrics
        .iter()
        .find(|m| m["type"] == "Pods")
        .expect("a Pods (request rate) metric");
    let metric_name = str_of(&rate["pods"]["metric"]["name"], "pods.metric.name");
    assert_eq!(rate["pods"]["target"]["type"], "AverageValue");

    // The prometheus-adapter rule serves that name from a counter the origin exports.
    let adapter = documents(
        &read(&repo_root().join("deploy/prometheus-adapter/rules.yaml")),
        "rules.yaml",
    );
    let rules = adapter[0]["rules"]["custom"]
        .as_array()
        .expect("rules.custom");
    let rule = rules
        .iter()
        .find(|r| r["name"]["as"] == metric_name)
        .unwrap_or_else(|| panic!("no adapter rule serves {metric_name}"));
    let series = str_of(&rule["seriesQuery"], "seriesQuery");
    let counter = series.split('{').next().unwrap();
    let observability = read(&repo_root().join("origin/src/observability.rs"));
    assert!(
        observability.contains(&format!("\"{counter}\"")),
        "the adapter reads {counter}, which origin/src/observability.rs does not export"
    );
    assert_eq!(rule["name"]["matches"], format!("^{counter}$"));
    for label in ["namespace", "pod"] {
        assert_eq!(rule["resources"]["overrides"][label]["resource"], label);
    }
    let query = str_of(&rule["metricsQuery"], "metricsQuery");
    for needed in ["rate(<<.Series>>{<<.LabelMatchers>>", "by (<<.GroupBy>>)"] {
        assert!(query.contains(needed), "{query} lacks {needed}");
    }
    // The query, as the adapter expands it, is PromQL that promtool accepts.
    let expanded = query
        .replace("<<.Series>>", counter)
        .replace(
            "<<.LabelMatchers>>",
            "namespace=\"edge-recs\",pod=~\"origin-.*\"",
        )
        .replace("<<.GroupBy>>", "pod");
    let dir = tempfile::tempdir().unwrap();
    let rule_file = dir.path().join("adapter.yml");
    std::fs::write(
        &rule_file,
        format!(
            "groups:\n  - name: adapter\n    rules:\n      - record: pod:{metric_name}\n        expr: '{expanded}'\n"
        ),
    )
    .unwrap();
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rule_file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules on {expanded}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("adapter query not parsed: promtool is not on PATH ({e})"),
    }
}

#[test]
fn the_service_pdb_probes_and_config_reach_the_pods() {
    let deployment = the("Deployment");
    let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    let selector = labels(&deployment["spec"]["selector"]["matchLabels"]);
    assert!(
        selects(&selector, &pod_labels),
        "{selector:?} vs {pod_labels:?}"
    );

    let service = the("Service");
    let service_selector = labels(&service["spec"]["selector"]);
    assert!(
        selects(&service_selector, &pod_labels),
        "the Service selects {service_selector:?}, the pods are {pod_labels:?}"
    );
    let pdb = the("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(
        labels(&pdb["spec"]["selector"]["matchLabels"]),
        selector,
        "the PDB must cover exactly the Deployment's pods"
    );
    assert!(
        pdb["spec"]["maxUnavailable"].as_u64() == Some(1)
            || pdb["spec"]["minAvailable"].as_u64() == Some(1),
        "{pdb}"
    );

    let container = origin_container(&deployment);
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name").to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let port_of = |p: &Value| -> u64 {
        match p {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("no container port named {name}")),
            Value::Number(n) => {
                let n = n.as_u64().unwrap();
                assert!(ports.values().any(|&p| p == n), "no container port {n}");
                n
            }
            other => panic!("port {other}"),
        }
    };
    for p in service["spec"]["ports"].as_array().expect("service ports") {
        port_of(&p["targetPort"]);
    }
    for (probe, path) in [
        ("startupProbe", "/health"),
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_of(&get["port"]), ports["http"], "{probe} port");
    }

    // The ConfigMap the pod reads makes the origin listen on those ports.
    let config = the("ConfigMap");
    let env_from: Vec<&str> = container["envFrom"]
        .as_array()
        .expect("envFrom")
        .iter()
        .map(|e| str_of(&e["configMapRef"]["name"], "configMapRef"))
        .collect();
    assert_eq!(env_from, [str_of(&config["metadata"]["name"], "name")]);
    let data = &config["data"];
    let listen = listen_port(
        str_of(&data["ORIGIN_LISTEN"], "ORIGIN_LISTEN"),
        "ORIGIN_LISTEN",
    );
    assert_eq!(listen, ports["http"]);
    let metrics = str_of(&data["ORIGIN_METRICS_LISTEN"], "ORIGIN_METRICS_LISTEN");
    assert_eq!(
        listen_port(metrics, "ORIGIN_METRICS_LISTEN"),
        ports["metrics"]
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"],
        ports["metrics"].to_string()
    );
    for key in data.as_object().unwrap().keys() {
        assert!(
            key.starts_with("ORIGIN_") || key == "RUST_LOG",
            "ConfigMap key {key} is no origin setting"
        );
        assert!(
            key != "ORIGIN_DB" && key != "ADMIN_TOKEN",
            "{key} belongs in the Secret"
        );
    }

    // The drain fits in the grace period: preStop sleep, then the shutdown deadline.
    let spec = &deployment["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    assert!((1..=15).contains(&sleep), "preStop sleep {sleep} s");
    let deadline_ms: u64 = str_of(
        &data["ORIGIN_SHUTDOWN_DEADLINE_MS"],
        "ORIGIN_SHUTDOWN_DEADLINE_MS",
    )
    .parse()
    .unwrap();
    assert!(
        grace * 1000 >= sleep * 1000 + deadline_ms + 5000,
        "terminationGracePeriodSeconds {grace} leaves no margin after a {sleep} s preStop and a {deadline_ms} ms drain"
    );

    // Non-root, read-only, no privileges.
    let pod_security = &spec["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    let uid = pod_security["runAsUser"].as_u64().expect("runAsUser");
    assert!(uid > 0);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let (image_uid, _) = dockerfile_runtime_user();
    assert_eq!(
        uid, image_uid,
        "the pod's runAsUser is not the image's USER"
    );

    // Memory: requests and limits set; training's budget leaves room for the model
    // serving meanwhile.
    let resources = &container["resources"];
    for what in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                resources[what][resource].is_string(),
                "no {what}.{resource}"
            );
        }
    }
    let limit = mebibytes(str_of(&resources["limits"]["memory"], "memory limit"));
    let train: u64 = str_of(&data["ORIGIN_TRAIN_MEMORY_MB"], "ORIGIN_TRAIN_MEMORY_MB")
        .parse()
        .unwrap();
    assert!(
        train * 2 <= limit,
        "ORIGIN_TRAIN_MEMORY_MB {train} does not fit twice in the {limit} Mi limit"
    );
}

#[test]
fn the_database_url_and_admin_token_come_from_a_secret_of_placeholders_never_applied() {
    let deployment = the("Deployment");
    let container = origin_container(&deployment);
    let secret = the("Secret");
    let secret_name = str_of(&secret["metadata"]["name"], "secret name");
    let string_data = secret["stringData"].as_object().expect("stringData");
    assert!(
        secret.get("data").is_none(),
        "the example uses stringData only"
    );
    let env = container["env"].as_array().expect("env");
    for name in ["ORIGIN_DB", "ADMIN_TOKEN"] {
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the pod's env"));
        assert!(
            var.get("value").is_none(),
            "{name} is written in the manifest"
        );
        let from = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret_name, "{name}");
        let key = str_of(&from["key"], "key");
        assert!(string_data.contains_key(key), "the Secret has no {key}");
    }
    for (key, value) in string_data {
        let value = str_of(value, key);
        assert!(
            value.contains("REPLACE_ME"),
            "{key} in the Secret example is not a placeholder: {value}"
        );
    }
    let db_key = env.iter().find(|e| e["name"] == "ORIGIN_DB").unwrap()["valueFrom"]
        ["secretKeyRef"]["key"]
        .as_str()
        .unwrap();
    assert!(
        str_of(&string_data[db_key], db_key).starts_with("postgres://"),
        "several replicas need PostgreSQL"
    );
    // No other file holds a Secret, or a value that looks like a credential.
    for (file, object) in objects() {
        if object["kind"] == "Secret" {
            assert_eq!(file, "secret.example.yaml");
        }
    }
    // Applying the kustomization never overwrites the real Secret with placeholders.
    let kustomization = documents(&read(&k8s_dir().join("kustomization.yaml")), "k");
    let resources: Vec<&str> = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    assert!(!resources.contains(&"secret.example.yaml"));
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_secret_example() {
    let kustomization = documents(&read(&k8s_dir().join("kustomization.yaml")), "k");
    let k = &kustomization[0];
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    let present: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .filter(|n| n != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present);
    let namespace = the("Namespace");
    assert_eq!(k["namespace"], namespace["metadata"]["name"]);
    let container = origin_container(&the("Deployment"));
    let image = str_of(&container["image"], "image");
    let images = k["images"].as_array().expect("images");
    assert!(
        images
            .iter()
            .any(|i| image.starts_with(str_of(&i["name"], "image name"))),
        "the kustomization's images do not name {image}"
    );
}

/// The Dockerfile's stages: (the `FROM` line, its instructions), continuation lines
/// joined.
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = read(&repo_root().join("deploy/Dockerfile"));
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in lines {
        if line.starts_with("FROM ") {
            stages.push((line, Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.1.push(line);
        }
    }
    stages
}

/// The runtime stage's numeric `USER uid:gid`.
fn dockerfile_runtime_user() -> (u64, u64) {
    let stages = dockerfile_stages();
    let (_, runtime) = stages.last().expect("a stage");
    let users: Vec<&String> = runtime.iter().filter(|l| l.starts_with("USER ")).collect();
    assert_eq!(
        users.len(),
        1,
        "the runtime stage needs one USER: {users:?}"
    );
    let user = users[0].trim_start_matches("USER ").trim();
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let parse = |s: &str| -> u64 {
        s.parse().unwrap_or_else(|_| {
            panic!("USER {user}: use a numeric id, so runAsNonRoot can verify it")
        })
    };
    let (uid, gid) = (parse(uid), parse(gid));
    assert!(uid > 0 && gid > 0, "USER {user} is root");
    (uid, gid)
}

#[test]
fn the_image_builds_origin_locked_and_runs_it_as_a_numeric_non_root_user() {
    let stages = dockerfile_stages();
    assert_eq!(stages.len(), 2, "builder and runtime: {stages:?}");
    let (builder_from, builder) = &stages[0];
    let (runtime_from, runtime) = &stages[1];
    assert!(
        builder_from.starts_with("FROM rust:1.95") && builder_from.contains("-bookworm AS builder"),
        "{builder_from}"
    );
    assert!(
        builder.iter().any(
            |l| l.starts_with("RUN ") && l.contains("cargo build --release --locked -p origin")
        ),
        "the builder does not run `cargo build --release --locked -p origin`"
    );
    assert!(
        runtime_from.contains("distroless/cc-debian12") || runtime_from.contains("bookworm-slim"),
        "{runtime_from}"
    );
    dockerfile_runtime_user();
    let has = |line: &str| runtime.iter().any(|l| l == line);
    assert!(has("ENTRYPOINT [\"origin\"]"), "{runtime:?}");
    assert!(has("CMD [\"serve\"]"), "{runtime:?}");
    assert!(has("EXPOSE 8080 9090"), "{runtime:?}");
    let env = runtime
        .iter()
        .filter(|l| l.starts_with("ENV "))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    for setting in [
        "ORIGIN_LISTEN=0.0.0.0:8080",
        "ORIGIN_METRICS_LISTEN=0.0.0.0:9090",
    ] {
        assert!(env.contains(setting), "the image does not set {setting}");
    }
    let copies: Vec<&String> = runtime.iter().filter(|l| l.starts_with("COPY ")).collect();
    assert!(
        copies
            .iter()
            .any(|l| l.contains("--from=builder") && l.ends_with("/usr/local/bin/origin")),
        "{copies:?}"
    );
    assert!(
        copies.iter().any(|l| l.starts_with("COPY geo-data/ ")),
        "{copies:?}"
    );
    assert!(
        !runtime
            .iter()
            .any(|l| l.contains("cargo") || l.starts_with("RUN ")),
        "the runtime stage builds or runs something: {runtime:?}"
    );

    let ignore = read(&repo_root().join(".dockerignore"));
    for needed in ["target/", "node_modules/", "var/", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore lacks {needed}"
        );
    }
}

#[test]
fn the_workspace_loads_locked_from_what_the_dockerfile_copies() {
    let stages = dockerfile_stages();
    let (_, builder) = &stages[0];
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for line in builder.iter().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert!(
            !parts.iter().any(|p| p.starts_with("--")),
            "flags in the builder's COPY: {line}"
        );
        let (sources, _dest) = parts.split_at(parts.len() - 1);
        for source in sources {
            let from = root.join(source.trim_end_matches('/'));
            let to = dir.path().join(source.trim_end_matches('/'));
            let status = Command::new("cp")
                .arg("-r")
                .arg(&from)
                .arg(&to)
                .status()
                .expect("cp");
            assert!(status.success(), "copying {}", from.display());
            copied.push(source.to_string());
        }
    }
    assert!(
        copied.contains(&"Cargo.lock".to_string()),
        "the builder does not copy Cargo.lock: {copied:?}"
    );
    // What the image's build sees: the workspace loads with the lockfile as it is.
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(dir.path().join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "the workspace does not load from the Dockerfile's COPY lines {copied:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        members.contains(&"origin") && members.contains(&"contract"),
        "{members:?}"
    );
}

#[test]
fn the_origin_links_only_what_its_distroless_cc_image_has() {
    let bin = e2e::origin_bin();
    let out = Command::new("ldd").arg(&bin).output().expect("ldd runs");
    assert!(out.status.success(), "ldd {}", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    // distroless/cc-debian12: glibc (libc, libm, libpthread, libdl, librt, ld-linux) and
    // libgcc_s; no OpenSSL, no libsqlite3 (TLS is rustls, SQLite is compiled in).
    let allowed = [
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "libgcc_s.so",
        "ld-linux",
    ];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lib = line.split_whitespace().next().unwrap();
        let lib = lib.rsplit('/').next().unwrap();
        assert!(
            allowed.iter().any(|a| lib.starts_with(a)),
            "the origin needs {lib}, which distroless/cc does not have:\n{text}"
        );
    }
}
