//! Publishing recommendation documents to where the edge reads them: the edge's KV
//! (through its `POST /admin/publish` route) and the secondary CDN folder.
//!
//! A bulk publish writes one whole *generation* and then flips a pointer, so readers
//! never see two generations mixed: on the CDN side `OUT/generations/{gen}/…` is
//! written and `OUT/current` (a symlink) is atomically renamed to point at it; on the
//! KV side documents are sent in batches into `{gen}` and the last request activates it.
//! Users are computed in chunks (in parallel with rayon), so memory stays bounded
//! however many users there are.
//!
//! # Layout
//! - [`EdgeClient`]: the edge's admin publish route.
//! - [`CdnFolder`], [`CdnGeneration`]: the CDN folder and one generation being written.
//! - [`publish_all`]: the bulk publish behind `origin publish`.
//! - [`publish_one`]: the background publish of one answered document.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::admin::{PublishRequest, PublishResponse, PurgeRequest, PurgeResponse};
use contract::keys::{cdn_popular, cdn_user, generation_name, Generation};
use contract::{ErrorBody, IdError, RecommendationDoc, Region, Tenant, UserId};
use rayon::prelude::*;
use thiserror::Error;

use crate::auth::Secret;
use crate::snapshot::{now_unix, DocRequest, Snapshot};

/// Most documents sent in one KV publish request (the edge accepts up to
/// [`contract::admin::MAX_PUBLISH_DOCS`]).
pub const KV_BATCH: usize = 500;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("edge answered {status} to {url}: {code}: {message}")]
    Edge {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the edge at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("user id {0:?} in the database is not valid: {1}")]
    BadUserId(String, IdError),
    #[error("{0} has no current generation (publish one with `origin publish --out`)")]
    NoCurrent(PathBuf),
    #[error("document encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The edge's admin publish route.
#[derive(Clone, Debug)]
pub struct EdgeClient {
    client: reqwest::Client,
    url: String,
    purge_url: String,
    token: Secret,
}

impl EdgeClient {
    /// A client for `{base_url}/admin/publish`, authenticating with `token`.
    pub fn new(base_url: &str, token: Secret) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        EdgeClient {
            client,
            url: format!("{}/admin/publish", base_url.trim_end_matches('/')),
            purge_url: format!("{}/admin/purge", base_url.trim_end_matches('/')),
            token,
        }
    }

    /// Sends one publish request; a non-2xx answer becomes [`PublishError::Edge`] with
    /// the edge's JSON error message.
    pub async fn publish(&self, req: &PublishRequest) -> Result<PublishResponse, PublishError> {
        self.publish_traced(req, None).await
    }

    /// [`EdgeClient::publish`] carrying a W3C `traceparent` header.
    pub async fn publish_traced(
        &self,
        req: &PublishRequest,
        traceparent: Option<&str>,
    ) -> Result<PublishResponse, PublishError> {
        self.post(&self.url, req, traceparent).await
    }

    /// Drops the edge-cache entries of some users (`POST {edge}/admin/purge`).
    pub async fn purge(
        &self,
        req: &PurgeRequest,
        traceparent: Option<&str>,
    ) -> Result<PurgeResponse, PublishError> {
        self.post(&self.purge_url, req, traceparent).await
    }

    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        req: &Req,
        traceparent: Option<&str>,
    ) -> Result<Resp, PublishError> {
        let http = |source| PublishError::Http {
            url: url.to_owned(),
            source,
        };
        let mut builder = self
            .client
            .post(url)
            .bearer_auth(self.token.expose())
            .json(req);
        if let Some(tp) = traceparent {
            builder = builder.header("traceparent", tp);
        }
        let resp = builder.send().await.map_err(http)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http)?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => ("http_error".into(), text.chars().take(300).collect()),
            };
            return Err(PublishError::Edge {
                url: url.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// The secondary CDN folder: `generations/{gen}/{tenant}/…` plus the `current` symlink.
#[derive(Clone, Debug)]
pub struct CdnFolder {
    root: PathBuf,
}

/// One generation of the CDN folder, being written.
#[derive(Debug)]
pub struct CdnGeneration {
    root: PathBuf,
    dir: PathBuf,
    pub generation: Generation,
}

fn write_json(path: &Path, doc: &RecommendationDoc) -> Result<(), PublishError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, serde_json::to_vec(doc)?).map_err(io(path))
}

/// Writes via a temporary file of its own (a unique name in the same directory, created
/// exclusively) and a rename, so readers see the whole old or the whole new file, however
/// many writers (tasks or processes) replace the same file at once.
fn replace_json(path: &Path, doc: &RecommendationDoc) -> Result<(), PublishError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("doc"),
        std::ffi::OsStr::to_os_string,
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&name).suffix(".tmp");
    // Readable by a web server of another user, like a file written in place.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(io(dir))?;
    tmp.write_all(&serde_json::to_vec(doc)?)
        .map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

impl CdnFolder {
    pub fn new(root: PathBuf) -> Self {
        CdnFolder { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `current` symlink.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// Deletes all generations but the newest `keep` and the one `current` points at.
    /// Returns how many were deleted.
    pub fn prune(&self, keep: usize) -> Result<usize, PublishError> {
        let gens = self.root.join("generations");
        let current = std::fs::read_link(self.current())
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let mut names: Vec<(u64, u32, String)> = std::fs::read_dir(&gens)
            .map_err(io(&gens))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (secs, counter) = name.strip_prefix('g')?.split_once('-')?;
                Some((secs.parse().ok()?, counter.parse().ok()?, name))
            })
            .collect();
        names.sort();
        let old = names.len().saturating_sub(keep);
        let mut deleted = 0;
        for (_, _, name) in names.into_iter().take(old) {
            if Some(&name) == current.as_ref() {
                continue;
            }
            let dir = gens.join(&name);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Creates a new, empty generation named for `now`, with a counter above those
    /// already used in that second.
    pub fn new_generation(&self, now: u64) -> Result<CdnGeneration, PublishError> {
        let gens = self.root.join("generations");
        std::fs::create_dir_all(&gens).map_err(io(&gens))?;
        // Counters only grow within a second, even after pruning, so names sort by age.
        let prefix = format!("g{now}-");
        let first = std::fs::read_dir(&gens)
            .map_err(io(&gens))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix)?.parse::<u32>().ok()
            })
            .max()
            .map_or(0, |c| c.saturating_add(1));
        for counter in first..first.saturating_add(10_000) {
            let generation = generation_name(now, counter);
            let dir = gens.join(generation.as_str());
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(CdnGeneration {
                        root: self.root.clone(),
                        dir,
                        generation,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&dir)(e)),
            }
        }
        Err(io(&gens)(std::io::Error::other(
            "no free generation name for this second",
        )))
    }

    /// Writes (replaces) one user's document in the current generation.
    pub fn write_current_user(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
    ) -> Result<PathBuf, PublishError> {
        let current = self.current();
        let target =
            std::fs::read_link(&current).map_err(|_| PublishError::NoCurrent(self.root.clone()))?;
        let dir = if target.is_absolute() {
            target
        } else {
            self.root.join(target)
        };
        let user = UserId::parse(&doc.user_id)
            .map_err(|e| PublishError::BadUserId(doc.user_id.clone(), e))?;
        let path = dir.join(cdn_user(tenant, &user));
        replace_json(&path, doc)?;
        Ok(path)
    }
}

impl CdnGeneration {
    /// Writes a user's document into this generation.
    pub fn write_user(
        &self,
        tenant: &Tenant,
        user: &UserId,
        doc: &RecommendationDoc,
    ) -> Result<(), PublishError> {
        write_json(&self.dir.join(cdn_user(tenant, user)), doc)
    }

    /// Writes a region's popular list into this generation.
    pub fn write_popular(
        &self,
        tenant: &Tenant,
        region: &Region,
        doc: &RecommendationDoc,
    ) -> Result<(), PublishError> {
        write_json(&self.dir.join(cdn_popular(tenant, region)), doc)
    }

    /// Atomically points `current` at this generation (a temporary symlink renamed over it).
    pub fn activate(&self) -> Result<(), PublishError> {
        let rel = Path::new("generations").join(self.generation.as_str());
        let tmp = self
            .root
            .join(format!(".current.tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&rel, &tmp).map_err(io(&tmp))?;
        #[cfg(not(unix))]
        return Err(io(&tmp)(std::io::Error::other(
            "symlinks are needed for the CDN folder",
        )));
        let current = self.root.join("current");
        std::fs::rename(&tmp, &current).map_err(io(&current))
    }
}

/// What `publish_all` should do.
pub struct PublishJob {
    pub tenant: Tenant,
    /// Items per document.
    pub n: usize,
    /// Only these users; all users of the store when `None`.
    pub users: Option<Vec<UserId>>,
    /// Users computed at a time.
    pub chunk: usize,
    pub cdn: Option<CdnFolder>,
    pub kv: Option<EdgeClient>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// CDN generations kept after activation (older ones are deleted); 0 keeps all.
    pub keep_generations: usize,
}

/// What a bulk publish did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    pub generation: String,
    pub users: usize,
    pub cdn_files: usize,
    pub kv_documents: usize,
    pub popular_lists: usize,
    /// Old CDN generations deleted after activation.
    pub pruned_generations: usize,
    pub elapsed: Duration,
}

impl PublishReport {
    pub fn users_per_second(&self) -> f64 {
        self.users as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Computes and publishes every (or every listed) user's document into one new
/// generation, then activates it.
pub async fn publish_all(
    snapshot: Arc<Snapshot>,
    job: PublishJob,
) -> Result<PublishReport, PublishError> {
    let started = Instant::now();
    let now = now_unix();
    let generation = match &job.cdn {
        Some(cdn) => {
            let cdn = cdn.clone();
            let g = tokio::task::spawn_blocking(move || cdn.new_generation(now))
                .await
                .map_err(|e| PublishError::Task(e.to_string()))??;
            Some(g)
        }
        None => None,
    };
    let gen_name = generation
        .as_ref()
        .map_or_else(|| generation_name(now, 0), |g| g.generation.clone());
    let generation = generation.map(Arc::new);
    let users: Vec<UserId> = match job.users {
        Some(u) => u,
        None => snapshot
            .user_ids()
            .iter()
            .map(|u| UserId::parse(u).map_err(|e| PublishError::BadUserId(u.clone(), e)))
            .collect::<Result<_, _>>()?,
    };
    let bar = if job.progress {
        indicatif::ProgressBar::with_draw_target(
            Some(users.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} publish {bar:40} {pos}/{len} users {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut report = PublishReport {
        generation: gen_name.as_str().to_owned(),
        users: 0,
        cdn_files: 0,
        kv_documents: 0,
        popular_lists: 0,
        pruned_generations: 0,
        elapsed: Duration::ZERO,
    };
    let n = job.n;
    for chunk in users.chunks(job.chunk.max(1)) {
        let chunk = chunk.to_vec();
        let snap = snapshot.clone();
        let gen = generation.clone();
        let tenant = job.tenant.clone();
        let docs = tokio::task::spawn_blocking(move || {
            chunk
                .par_iter()
                .map(|u| {
                    let doc = snap.user_doc(
                        u,
                        &DocRequest {
                            n,
                            ..Default::default()
                        },
                        now,
                    );
                    if let Some(g) = &gen {
                        g.write_user(&tenant, u, &doc)?;
                    }
                    Ok(doc)
                })
                .collect::<Result<Vec<_>, PublishError>>()
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))??;
        report.users += docs.len();
        if generation.is_some() {
            report.cdn_files += docs.len();
        }
        if let Some(kv) = &job.kv {
            for batch in docs.chunks(KV_BATCH) {
                let resp = kv
                    .publish(&PublishRequest {
                        tenant: Some(job.tenant.as_str().to_owned()),
                        generation: Some(gen_name.as_str().to_owned()),
                        activate: false,
                        documents: batch.to_vec(),
                        popular: Vec::new(),
                    })
                    .await?;
                report.kv_documents += resp.written;
            }
        }
        bar.inc(docs.len() as u64);
    }
    let popular: Vec<RecommendationDoc> = snapshot
        .regions
        .regions()
        .iter()
        .map(|r| snapshot.popular_doc(r, contract::MAX_N, now))
        .collect();
    if let Some(g) = &generation {
        for (region, doc) in snapshot.regions.regions().iter().zip(&popular) {
            g.write_popular(&job.tenant, region, doc)?;
            report.cdn_files += 1;
        }
    }
    report.popular_lists = popular.len();
    if let Some(kv) = &job.kv {
        kv.publish(&PublishRequest {
            tenant: Some(job.tenant.as_str().to_owned()),
            generation: Some(gen_name.as_str().to_owned()),
            activate: true,
            documents: Vec::new(),
            popular,
        })
        .await?;
    }
    if let Some(g) = &generation {
        g.activate()?;
        if let (Some(cdn), keep @ 1..) = (&job.cdn, job.keep_generations) {
            report.pruned_generations = cdn.prune(keep)?;
        }
    }
    bar.finish_and_clear();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What [`publish_one`] did per target (`None`: the target is not configured).
#[derive(Debug, Default)]
pub struct PublishOneOutcome {
    pub cdn: Option<Result<(), String>>,
    pub kv: Option<Result<(), String>>,
}

impl PublishOneOutcome {
    /// Every configured target took the document.
    pub fn all_ok(&self) -> bool {
        [&self.cdn, &self.kv]
            .iter()
            .all(|r| r.as_ref().is_none_or(|r| r.is_ok()))
    }
}

/// Publishes one answered document into the edge KV's current generation and the CDN
/// folder's current generation. Failures are logged and reported, never raised.
pub async fn publish_one(
    edge: Option<&EdgeClient>,
    cdn: Option<&CdnFolder>,
    tenant: &Tenant,
    doc: RecommendationDoc,
) -> PublishOneOutcome {
    publish_one_traced(edge, cdn, tenant, doc, None).await
}

/// [`publish_one`], passing a W3C `traceparent` on to the edge.
pub async fn publish_one_traced(
    edge: Option<&EdgeClient>,
    cdn: Option<&CdnFolder>,
    tenant: &Tenant,
    doc: RecommendationDoc,
    traceparent: Option<&str>,
) -> PublishOneOutcome {
    let mut outcome = PublishOneOutcome::default();
    if let Some(cdn) = cdn {
        let (cdn, tenant, doc) = (cdn.clone(), tenant.clone(), doc.clone());
        let user = doc.user_id.clone();
        let result = match tokio::task::spawn_blocking(move || {
            cdn.write_current_user(&tenant, &doc)
        })
        .await
        {
            Ok(Ok(path)) => {
                tracing::debug!(user = %user, path = %path.display(), "wrote to CDN folder");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(user = %user, error = %e, "CDN write after miss failed");
                Err(e.to_string())
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "CDN write task failed");
                Err(e.to_string())
            }
        };
        outcome.cdn = Some(result);
    }
    if let Some(edge) = edge {
        let user = doc.user_id.clone();
        let req = PublishRequest {
            tenant: Some(tenant.as_str().to_owned()),
            generation: None,
            activate: false,
            documents: vec![doc],
            popular: Vec::new(),
        };
        let result = match edge.publish_traced(&req, traceparent).await {
            Ok(r) => {
                tracing::debug!(user = %user, generation = %r.generation, "published to KV");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "KV publish after miss failed");
                Err(e.to_string())
            }
        };
        outcome.kv = Some(result);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::Json;

    fn job(tenant: &Tenant, cdn: Option<CdnFolder>, kv: Option<EdgeClient>) -> PublishJob {
        PublishJob {
            tenant: tenant.clone(),
            n: 20,
            users: None,
            chunk: 64,
            cdn,
            kv,
            progress: false,
            keep_generations: 0,
        }
    }

    fn read_doc(path: &Path) -> RecommendationDoc {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_publish_writes_a_generation_and_points_current_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let snapshot = Arc::new(snapshot);
        let tenant = Tenant::default_tenant();
        let out = dir.path().join("cdn");
        let folder = CdnFolder::new(out.clone());

        let first = publish_all(snapshot.clone(), job(&tenant, Some(folder.clone()), None))
            .await
            .unwrap();
        assert_eq!(first.users, 200);
        assert_eq!(first.cdn_files, 200 + 4);
        let target = std::fs::read_link(out.join("current")).unwrap();
        assert_eq!(
            target,
            Path::new("generations").join(&first.generation),
            "current is a relative link to the generation"
        );
        let doc = read_doc(&out.join("current/default/users/u1.json"));
        assert_eq!(doc.user_id, "u1");
        assert_eq!(doc.items.len(), 20);
        for region in snapshot.regions.regions() {
            let p = out.join(format!("current/default/popular/{}.json", region.as_str()));
            let doc = read_doc(&p);
            assert_eq!(doc.user_id, "*");
            assert_eq!(doc.region, region.as_str());
            assert_eq!(doc.items.len(), contract::MAX_N.min(80));
        }

        let second = publish_all(snapshot.clone(), job(&tenant, Some(folder), None))
            .await
            .unwrap();
        assert_ne!(second.generation, first.generation);
        assert_eq!(
            std::fs::read_link(out.join("current")).unwrap(),
            Path::new("generations").join(&second.generation)
        );
        assert!(out
            .join("generations")
            .join(&first.generation)
            .join("default/users/u1.json")
            .exists());
    }

    #[tokio::test]
    async fn old_generations_are_pruned_but_current_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let snapshot = Arc::new(snapshot);
        let tenant = Tenant::default_tenant();
        let out = dir.path().join("cdn");
        let mut last = String::new();
        for _ in 0..4 {
            let mut j = job(&tenant, Some(CdnFolder::new(out.clone())), None);
            j.users = Some(vec![UserId::parse("u1").unwrap()]);
            j.keep_generations = 2;
            last = publish_all(snapshot.clone(), j).await.unwrap().generation;
        }
        let left: Vec<_> = std::fs::read_dir(out.join("generations"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(out.join("current/default/users/u1.json").exists());
        assert_eq!(
            std::fs::read_link(out.join("current")).unwrap(),
            Path::new("generations").join(last)
        );
    }

    #[tokio::test]
    async fn a_publish_limited_to_some_users_writes_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let tenant = Tenant::default_tenant();
        let out = dir.path().join("cdn");
        let mut j = job(&tenant, Some(CdnFolder::new(out.clone())), None);
        j.users = Some(vec![
            UserId::parse("u2").unwrap(),
            UserId::parse("u7").unwrap(),
        ]);
        let report = publish_all(Arc::new(snapshot), j).await.unwrap();
        assert_eq!(report.users, 2);
        let mut files: Vec<String> = std::fs::read_dir(out.join("current/default/users"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["u2.json", "u7.json"]);
    }

    /// The `Authorization` header and body of each request the fake edge received.
    type Received = Vec<(Option<String>, PublishRequest)>;

    #[derive(Clone, Default)]
    struct FakeEdge {
        seen: Arc<Mutex<Received>>,
        refuse: bool,
    }

    async fn fake_publish(
        State(edge): State<FakeEdge>,
        headers: HeaderMap,
        Json(req): Json<PublishRequest>,
    ) -> Result<Json<PublishResponse>, (StatusCode, Json<ErrorBody>)> {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        edge.seen.lock().unwrap().push((auth, req.clone()));
        if edge.refuse {
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(ErrorBody::new("unauthorized", "bad admin token")),
            ));
        }
        Ok(Json(PublishResponse {
            tenant: req.tenant.clone().unwrap_or_default(),
            generation: req.generation.clone().unwrap_or_else(|| "gcur".into()),
            written: req.documents.len() + req.popular.len(),
            activated: req.activate,
        }))
    }

    async fn start_fake_edge(edge: FakeEdge) -> String {
        let app = axum::Router::new()
            .route("/admin/publish", axum::routing::post(fake_publish))
            .layer(axum::extract::DefaultBodyLimit::max(
                contract::admin::MAX_ADMIN_BODY_BYTES,
            ))
            .with_state(edge);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_kv_publish_sends_batches_then_activates_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let edge = FakeEdge::default();
        let url = start_fake_edge(edge.clone()).await;
        let tenant = Tenant::default_tenant();
        let mut j = job(
            &tenant,
            None,
            Some(EdgeClient::new(&url, Secret::new("s3cret"))),
        );
        j.chunk = 1000;
        let report = publish_all(Arc::new(snapshot), j).await.unwrap();
        assert_eq!(report.kv_documents, 200);
        let seen = edge.seen.lock().unwrap();
        assert!(seen
            .iter()
            .all(|(auth, _)| auth.as_deref() == Some("Bearer s3cret")));
        let (last, batches) = seen.split_last().unwrap();
        assert!(last.1.activate);
        assert_eq!(last.1.popular.len(), 4);
        assert!(last.1.documents.is_empty());
        assert!(batches.iter().all(|(_, r)| !r.activate
            && r.documents.len() <= KV_BATCH
            && r.generation.as_deref() == Some(report.generation.as_str())
            && r.tenant.as_deref() == Some("default")));
        assert_eq!(
            batches
                .iter()
                .map(|(_, r)| r.documents.len())
                .sum::<usize>(),
            200
        );
    }

    #[tokio::test]
    async fn an_edge_refusal_is_an_error_with_the_edges_message() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let edge = FakeEdge {
            refuse: true,
            ..Default::default()
        };
        let url = start_fake_edge(edge).await;
        let tenant = Tenant::default_tenant();
        let j = job(&tenant, None, Some(EdgeClient::new(&url, Secret::new("x"))));
        let err = publish_all(Arc::new(snapshot), j).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("401"), "{msg}");
        assert!(msg.contains("bad admin token"), "{msg}");
    }

    #[test]
    fn concurrent_writers_of_one_users_file_leave_readers_only_complete_documents() {
        let dir = tempfile::tempdir().unwrap();
        let folder = CdnFolder::new(dir.path().to_owned());
        folder.new_generation(1).unwrap().activate().unwrap();
        let tenant = Tenant::default_tenant();
        let file = dir.path().join("current/default/users/u1.json");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (reads, bad) = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8)
                .map(|w| {
                    let (folder, tenant) = (&folder, &tenant);
                    s.spawn(move || {
                        let mut failed = Vec::new();
                        for i in 0..300 {
                            let mut doc = RecommendationDoc {
                                tenant: "default".into(),
                                user_id: "u1".into(),
                                region: "us-east".into(),
                                items: Vec::new(),
                                model_version: format!("w{w}#{i}"),
                                generated_at: i,
                                fresh_for_s: 300,
                                stale_for_s: 86_400,
                            };
                            doc.items = (0..(20 + (i as usize * 7 + w) % 80))
                                .map(|k| contract::RecItem {
                                    item_id: format!("item-{k}"),
                                    score: 1.0 / (k + 1) as f64,
                                    reason: Some(
                                        "a reason long enough to need several writes".into(),
                                    ),
                                })
                                .collect();
                            if let Err(e) = folder.write_current_user(tenant, &doc) {
                                failed.push(e.to_string());
                            }
                        }
                        failed
                    })
                })
                .collect();
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let (mut reads, mut bad) = (0, Vec::new());
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let Ok(bytes) = std::fs::read(&file) else {
                                continue;
                            };
                            reads += 1;
                            if serde_json::from_slice::<RecommendationDoc>(&bytes).is_err() {
                                bad.push(bytes.len());
                            }
                        }
                        (reads, bad)
                    })
                })
                .collect();
            let failed: Vec<String> = writers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(
                failed.is_empty(),
                "{} writes failed, e.g. {:?}",
                failed.len(),
                failed.first()
            );
            readers.into_iter().map(|r| r.join().unwrap()).fold(
                (0, Vec::new()),
                |(n, mut b), (rn, rb)| {
                    b.extend(rb);
                    (n + rn, b)
                },
            )
        });
        assert!(reads > 100, "only {reads} reads");
        assert!(
            bad.is_empty(),
            "{} of {reads} reads were not whole documents (sizes {:?})",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["u1.json"], "no temporary files are left behind");
    }

    #[tokio::test]
    async fn publish_on_miss_sends_one_document_into_the_current_kv_generation() {
        let edge = FakeEdge::default();
        let url = start_fake_edge(edge.clone()).await;
        let client = EdgeClient::new(&url, Secret::new("t"));
        let doc = RecommendationDoc {
            tenant: "default".into(),
            user_id: "u1".into(),
            region: "europe".into(),
            items: Vec::new(),
            model_version: "x#y".into(),
            generated_at: 1,
            fresh_for_s: 300,
            stale_for_s: 86_400,
        };
        let outcome =
            publish_one(Some(&client), None, &Tenant::default_tenant(), doc.clone()).await;
        assert!(matches!(outcome.kv, Some(Ok(()))));
        assert!(outcome.cdn.is_none());
        let seen = edge.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let req = &seen[0].1;
        assert_eq!(req.generation, None);
        assert!(!req.activate);
        assert_eq!(req.documents, vec![doc]);
    }
}
