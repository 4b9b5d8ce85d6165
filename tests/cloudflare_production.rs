//! The production publish paths end to end (issue #14): the secondary CDN on
//! S3-compatible object storage, read by the real worker under `wrangler dev` through
//! the bucket's `current` pointer object.
//!
//! The bucket is a real S3-compatible server, `s3s-fs`, run twice over one folder: a
//! signed side that `origin publish --targets object-storage` writes to (as R2's S3 API),
//! and a public side the worker reads anonymously (as a public R2 bucket domain).

use std::time::Duration;

use e2e::*;

/// Generations in the bucket holding at least one object (s3s-fs keeps a folder's
/// empty directories after its objects are deleted; S3 itself has no directories).
fn generations(root: &std::path::Path) -> Vec<String> {
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    if e.path().is_dir() {
                        files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("recs/cdn/generations"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| files(&e.path()) > 0)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A stack whose worker reads its secondary CDN from a bucket (pointer layout), and the
/// bucket's two sides over one folder.
struct BucketStack {
    stack: Stack,
    writer: S3Server,
    public: S3Server,
    /// The folder behind the bucket `recs`.
    root: std::path::PathBuf,
    /// Removed last, after the processes using it.
    bucket_root: tempfile::TempDir,
}

impl BucketStack {
    /// `None` (locally) when s3s-fs is missing; in CI that fails.
    fn start() -> Option<BucketStack> {
        let bucket_root = tempfile::tempdir().unwrap();
        let root = bucket_root.path().join("s3");
        std::fs::create_dir_all(root.join("recs")).unwrap();
        let writer = S3Server::start(&root, true, bucket_root.path())?;
        let public = S3Server::start(&root, false, bucket_root.path())?;
        let stack = Stack::start(StackOptions {
            vars: vec![
                (
                    "SECONDARY_CDN_URL",
                    format!("{}/recs/cdn", public.endpoint()),
                ),
                ("SECONDARY_CDN_LAYOUT", "pointer".into()),
            ],
            ..Default::default()
        });
        Some(BucketStack {
            bucket_root,
            root,
            writer,
            public,
            stack,
        })
    }
}

fn publish_to_bucket(stack: &Stack, writer: &S3Server, keep: &str) -> String {
    publish_to_bucket_with(stack, writer, keep, &[])
}

fn publish_to_bucket_with(stack: &Stack, writer: &S3Server, keep: &str, extra: &[&str]) -> String {
    let endpoint = writer.endpoint();
    let mut args = vec![
        "publish",
        "--db",
        &stack.db,
        "--targets",
        "object-storage",
        "--s3-endpoint",
        &endpoint,
        "--s3-bucket",
        "recs",
        "--s3-prefix",
        "cdn",
        "--keep-generations",
        keep,
    ];
    args.extend_from_slice(extra);
    run_origin(
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ],
    )
}

#[test]
fn the_edge_reads_the_secondary_cdn_on_object_storage_through_its_pointer() {
    let Some(BucketStack {
        bucket_root: _bucket_root,
        root,
        writer,
        public: _public,
        stack,
    }) = BucketStack::start()
    else {
        return;
    };

    // Nothing published yet: no pointer, so the CDN tier finds nothing and the origin answers.
    let before = stack.get("/v1/recommendations/u1");
    assert_eq!(before.status(), 200);
    assert_eq!(header(&before, "x-served-by"), "origin");

    let out = publish_to_bucket(&stack, &writer, "1");
    assert!(out.contains("objects"), "{out}");
    // KV holds nothing (only the bucket was published), so the CDN tier answers.
    let r = stack.get("/v1/recommendations/u2");
    assert_eq!(
        header(&r, "x-served-by"),
        "secondary-cdn",
        "{}",
        stack.edge.log_tail()
    );
    let doc = served(r);
    assert_eq!(doc["user_id"], "u2");
    assert!(!doc["items"].as_array().unwrap().is_empty());

    // A second publish keeping one generation deletes the first: a user never asked for
    // before is still served by the CDN tier only if the edge follows the new pointer
    // (GENERATION_CACHE_S is 0 in the test stack).
    let first_gens = generations(&root);
    assert_eq!(first_gens.len(), 1, "{first_gens:?}");
    std::thread::sleep(Duration::from_millis(1100));
    publish_to_bucket(&stack, &writer, "1");
    let gens = generations(&root);
    assert_eq!(gens.len(), 1, "{gens:?}");
    assert_ne!(gens, first_gens, "the first generation was pruned");
    let r = stack.get("/v1/recommendations/u3");
    assert_eq!(
        header(&r, "x-served-by"),
        "secondary-cdn",
        "{}",
        stack.edge.log_tail()
    );
    assert_eq!(served(r)["user_id"], "u3");
}

#[test]
fn a_delta_publish_writes_only_changes_and_the_edge_reads_the_rest_from_its_base() {
    let Some(BucketStack {
        bucket_root: _bucket_root,
        root,
        writer,
        public: _public,
        stack,
    }) = BucketStack::start()
    else {
        return;
    };
    let state = stack.dir.path().join("publish-state.json");
    let delta = ["--delta", "--publish-state", state.to_str().unwrap()];

    // The first delta-enabled publish is whole: it becomes the base.
    let first = publish_to_bucket_with(&stack, &writer, "0", &delta);
    assert!(!first.contains("delta against"), "{first}");
    let base = generations(&root);
    assert_eq!(base.len(), 1);
    // Nothing changed since: the second writes no user document, only popular lists.
    std::thread::sleep(Duration::from_millis(1100));
    let second = publish_to_bucket_with(&stack, &writer, "0", &delta);
    assert!(
        second.contains(&format!("delta against {}", base[0])),
        "{second}"
    );
    assert!(second.contains("200 users unchanged"), "{second}");
    let gens = generations(&root);
    let newest = gens.last().unwrap();
    assert_ne!(newest, &base[0]);
    let users_dir = root
        .join("recs/cdn/generations")
        .join(newest)
        .join("default/users");
    assert!(
        std::fs::read_dir(&users_dir).map_or(0, |d| d.count()) == 0,
        "the delta holds no user document"
    );
    let pointer = std::fs::read_to_string(root.join("recs/cdn/current")).unwrap();
    assert!(pointer.contains(&format!("base={}", base[0])), "{pointer}");

    // The edge reads through the delta's pointer into the base, and counts the
    // document's freshness from the delta's publication.
    let before = now_s();
    let r = stack.get("/v1/recommendations/u5");
    assert_eq!(
        header(&r, "x-served-by"),
        "secondary-cdn",
        "{}",
        stack.edge.log_tail()
    );
    let doc = served(r);
    assert_eq!(doc["user_id"], "u5");
    let at: u64 = pointer
        .rsplit("at=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(doc["generated_at"].as_u64().unwrap(), at);
    assert!(
        at + 5 >= before,
        "confirmed at the delta's time, not the base's"
    );
}
