//! The secondary CDN folder as a publish target: `generations/{gen}/{tenant}/…` plus
//! a `current` symlink, flipped atomically (a temporary symlink renamed over it), that
//! the static server (`origin cdn`) serves from.
//!
//! A bulk publish writes a new generation directory, then flips `current`, then prunes
//! old generations down to [`CdnFolder::keeping`]. A generation is published for one
//! tenant; the other tenants' files of the current generation are carried into it as
//! hard links before the flip (no copy of the bytes), so publishing one tenant never
//! hides another's documents. The cost is a link per file of the other tenants; a
//! document another origin replaces between the carry and the flip stays in the old
//! generation only (its next miss writes it again). One document replaced after a miss
//! goes through a unique temporary file and a rename, so readers only ever see whole
//! documents, however many writers replace the same file at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use contract::keys::{cdn_popular, cdn_subject, cdn_user, Generation, GenerationPointer};
use contract::{RecommendationDoc, Region, Tenant, UserId};
use rayon::prelude::*;

use super::{Activated, PublishError, PublishTarget};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The secondary CDN folder: `generations/{gen}/{tenant}/…` plus the `current` symlink.
#[derive(Clone, Debug)]
pub struct CdnFolder {
    root: PathBuf,
    /// Generations kept after an activation (older ones are deleted); 0 keeps all.
    keep_generations: usize,
}

/// Recreates the tree `from` at `to` with hard links to its files; gives the files.
fn link_tree(from: &Path, to: &Path) -> Result<usize, PublishError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    let mut linked = 0;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            linked += link_tree(&src, &dst)?;
        } else if kind.is_file() && src.extension().is_none_or(|e| e != "tmp") {
            std::fs::hard_link(&src, &dst).map_err(io(&dst))?;
            linked += 1;
        }
    }
    Ok(linked)
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

/// Files below `dir` (not following symlinks).
fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk_files(&e.path()),
                Ok(_) => 1,
                Err(_) => 0,
            })
            .sum()
    })
}

impl CdnFolder {
    pub fn new(root: PathBuf) -> Self {
        CdnFolder {
            root,
            keep_generations: 0,
        }
    }

    /// This folder, keeping the newest `keep` generations after each activation
    /// (0 keeps all).
    pub fn keeping(mut self, keep: usize) -> Self {
        self.keep_generations = keep;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `current` symlink.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    fn generation_dir(&self, generation: &Generation) -> PathBuf {
        self.root.join("generations").join(generation.as_str())
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
                let (secs, counter) = Generation::age(&name)?;
                Some((secs, counter, name))
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

    /// Deletes `tenant`'s folder from every generation; gives the files and the
    /// generations it was in.
    pub fn remove_tenant_files(&self, tenant: &Tenant) -> Result<(usize, usize), PublishError> {
        let gens = self.root.join("generations");
        let Ok(entries) = std::fs::read_dir(&gens) else {
            return Ok((0, 0));
        };
        let (mut files, mut generations) = (0, 0);
        for entry in entries.filter_map(|e| e.ok()) {
            let dir = entry.path().join(tenant.as_str());
            if !dir.is_dir() {
                continue;
            }
            files += walk_files(&dir);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            generations += 1;
        }
        Ok((files, generations))
    }

    /// A counter above those already used by generations of second `now`: counters only
    /// grow within a second, even after pruning, so names sort by age.
    pub fn first_free_counter_at(&self, now: u64) -> Result<u32, PublishError> {
        let gens = self.root.join("generations");
        std::fs::create_dir_all(&gens).map_err(io(&gens))?;
        let prefix = format!("g{now}-");
        Ok(std::fs::read_dir(&gens)
            .map_err(io(&gens))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix)?.parse::<u32>().ok()
            })
            .max()
            .map_or(0, |c| c.saturating_add(1)))
    }

    /// Creates the empty directory of `generation`, exclusively.
    pub fn create_generation(&self, generation: &Generation) -> Result<(), PublishError> {
        let gens = self.root.join("generations");
        std::fs::create_dir_all(&gens).map_err(io(&gens))?;
        let dir = self.generation_dir(generation);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(
                PublishError::GenerationTaken(generation.as_str().to_owned()),
            ),
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Writes a user's document into `generation`.
    pub fn write_user(
        &self,
        generation: &Generation,
        tenant: &Tenant,
        user: &UserId,
        doc: &RecommendationDoc,
    ) -> Result<(), PublishError> {
        write_json(
            &self.generation_dir(generation).join(cdn_user(tenant, user)),
            doc,
        )
    }

    /// Writes a region's popular list into `generation`.
    pub fn write_popular_list(
        &self,
        generation: &Generation,
        tenant: &Tenant,
        region: &Region,
        doc: &RecommendationDoc,
    ) -> Result<(), PublishError> {
        write_json(
            &self
                .generation_dir(generation)
                .join(cdn_popular(tenant, region)),
            doc,
        )
    }

    /// Atomically points `current` at `generation`: a symlink under a name of its own
    /// (process and a random part, so concurrent publishers never share one) renamed
    /// over `current`.
    /// Hard-links every other tenant's files of the current generation into
    /// `generation` (which holds `tenant`'s new files); gives the files linked.
    pub fn carry_other_tenants(
        &self,
        tenant: &Tenant,
        generation: &Generation,
    ) -> Result<usize, PublishError> {
        let Ok(current) = std::fs::canonicalize(self.current()) else {
            return Ok(0); // nothing published yet
        };
        let new = self.root.join("generations").join(generation.as_str());
        if std::fs::canonicalize(&new).is_ok_and(|n| n == current) {
            return Ok(0);
        }
        let mut linked = 0;
        for entry in std::fs::read_dir(&current).map_err(io(&current))? {
            let entry = entry.map_err(io(&current))?;
            let name = entry.file_name();
            let is_dir = entry.file_type().map_err(io(&entry.path()))?.is_dir();
            if !is_dir || name == tenant.as_str() || new.join(&name).exists() {
                continue;
            }
            linked += link_tree(&entry.path(), &new.join(&name))?;
        }
        Ok(linked)
    }

    pub fn switch_current(&self, generation: &Generation) -> Result<(), PublishError> {
        let rel = Path::new("generations").join(generation.as_str());
        let tmp = self.root.join(format!(
            ".current.tmp{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        #[cfg(unix)]
        std::os::unix::fs::symlink(&rel, &tmp).map_err(io(&tmp))?;
        #[cfg(not(unix))]
        return Err(io(&tmp)(std::io::Error::other(
            "symlinks are needed for the CDN folder",
        )));
        let current = self.current();
        std::fs::rename(&tmp, &current).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&current)(e)
        })
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
        let path = dir.join(cdn_subject(tenant, &super::subject_of(doc)?));
        replace_json(&path, doc)?;
        Ok(path)
    }

    /// Runs `f` on a clone of this folder in the blocking pool.
    async fn blocking_remove(&self, tenant: &Tenant) -> Result<(usize, usize), PublishError> {
        let tenant = tenant.clone();
        self.blocking(move |f| f.remove_tenant_files(&tenant)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(CdnFolder) -> Result<T, PublishError> + Send + 'static,
    ) -> Result<T, PublishError> {
        let folder = self.clone();
        tokio::task::spawn_blocking(move || f(folder))
            .await
            .map_err(|e| PublishError::Task(e.to_string()))?
    }
}

#[async_trait]
impl PublishTarget for CdnFolder {
    fn name(&self) -> &'static str {
        "cdn"
    }

    async fn remove_tenant(&self, tenant: &Tenant) -> Result<String, PublishError> {
        let (files, generations) = self.blocking_remove(tenant).await?;
        Ok(format!(
            "{files} files in {generations} generations deleted"
        ))
    }

    async fn first_free_counter(&self, now: u64) -> Result<u32, PublishError> {
        self.blocking(move |f| f.first_free_counter_at(now)).await
    }

    async fn begin(
        &self,
        _tenant: &Tenant,
        generation: &Generation,
        _keep_until: Option<u64>,
    ) -> Result<(), PublishError> {
        let g = generation.clone();
        self.blocking(move |f| f.create_generation(&g)).await
    }

    async fn write_users(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: Arc<Vec<RecommendationDoc>>,
    ) -> Result<usize, PublishError> {
        let (g, tenant) = (generation.clone(), tenant.clone());
        self.blocking(move |f| {
            docs.par_iter()
                .map(|doc| {
                    let path = cdn_subject(&tenant, &super::subject_of(doc)?);
                    write_json(&f.generation_dir(&g).join(path), doc)
                })
                .collect::<Result<Vec<()>, _>>()
                .map(|written| written.len())
        })
        .await
    }

    async fn write_popular(
        &self,
        tenant: &Tenant,
        generation: &Generation,
        docs: &[RecommendationDoc],
    ) -> Result<usize, PublishError> {
        let (g, tenant, docs) = (generation.clone(), tenant.clone(), docs.to_vec());
        self.blocking(move |f| {
            for doc in &docs {
                // Popular lists carry their region; the contract validated it when built.
                let region = Region::parse(&doc.region).map_err(|e| {
                    PublishError::Task(format!("popular list region {:?}: {e}", doc.region))
                })?;
                f.write_popular_list(&g, &tenant, &region, doc)?;
            }
            Ok(docs.len())
        })
        .await
    }

    async fn activate(
        &self,
        tenant: &Tenant,
        pointer: &GenerationPointer,
    ) -> Result<Activated, PublishError> {
        if pointer.base.is_some() {
            return Err(PublishError::DeltaUnsupported("cdn"));
        }
        let g = pointer.generation.clone();
        let tenant = tenant.clone();
        self.blocking(move |f| {
            f.carry_other_tenants(&tenant, &g)?;
            f.switch_current(&g)?;
            let pruned = match f.keep_generations {
                0 => 0,
                keep => f.prune(keep)?,
            };
            Ok(Activated { pruned })
        })
        .await
    }

    async fn write_current(
        &self,
        tenant: &Tenant,
        doc: &RecommendationDoc,
        _traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let (tenant, doc) = (tenant.clone(), doc.clone());
        let path = self
            .blocking(move |f| f.write_current_user(&tenant, &doc))
            .await?;
        tracing::debug!(path = %path.display(), "wrote to CDN folder");
        Ok(())
    }
}
