//! Arguments and runners for `origin eval` and `origin split`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::data::{self, Format, IdMap};
use super::metrics::Metrics;
use super::tune::{train_best, TuneOptions};
use super::{by_activity, holdout, rank_lists, score_lists, split};
use crate::engine::{self, ModelKind, ModelSpec};
use crate::model::{ItemIdx, Recommender};

/// `origin eval`: train a model on --train, score its top K on --test.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Format of the interaction files.
    #[arg(long, value_enum, default_value = "lists")]
    pub format: Format,
    /// Training interactions (models train on this file only).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation interactions (read only for tuning: `--model auto`, `--tune`).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Test interactions (read for the final score only).
    #[arg(long)]
    pub test: PathBuf,
    /// Cut-off of the top-K metrics.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// popularity, trending, itemknn, userknn, ease, dlae, rp3beta, gfcf, als, content,
    /// hybrid, or auto (every model and a fitted blend, tuned on --valid).
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// MovieLens `u.item` with titles and genres, for the content model and hybrids.
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Score ranked lists from this file (`lists` format, best first) instead of a model,
    /// e.g. another library's output; training items are removed from each list first.
    #[arg(long)]
    pub score_lists: Option<PathBuf>,
    /// With a single model name: tune that model's hyperparameters on --valid.
    #[arg(long)]
    pub tune: bool,
    /// Override model parameters with a JSON object, e.g. '{"lambda": 400}'.
    #[arg(long)]
    pub params: Option<String>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave test (and validation) items never seen in training out of the relevant sets.
    /// By default they count as relevant items the model missed, as published protocols do.
    #[arg(long)]
    pub drop_unknown_items: bool,
    /// Seed (recorded in the output; the models and protocol are deterministic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// `origin split`: a reproducible per-user train/validation/test split in `lists` format.
#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    /// Interactions to split (MovieLens `u.data` by default).
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, value_enum, default_value = "movielens")]
    pub format: Format,
    /// Folder for train.txt, valid.txt and test.txt (created).
    #[arg(long)]
    pub out_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of each user's items for validation.
    #[arg(long, default_value_t = 0.1)]
    pub valid: f64,
    /// Share of each user's items for test.
    #[arg(long, default_value_t = 0.1)]
    pub test: f64,
}

/// `origin synth`: write synthetic MovieLens-shaped interactions (`u.data` format).
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    #[arg(long, default_value_t = 6_040)]
    pub users: usize,
    #[arg(long, default_value_t = 3_706)]
    pub items: usize,
    /// Mean distinct items per user.
    #[arg(long, default_value_t = 165)]
    pub mean_per_user: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file (tab-separated `user item rating timestamp`, ids from 1).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_synth(args: SynthArgs) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let d = engine::synthetic::synthetic(args.users, args.items, args.mean_per_user, args.seed);
    let mut s = String::with_capacity(d.interactions.len() * 24);
    for x in &d.interactions {
        let _ = writeln!(s, "{}\t{}\t1\t{}", x.user + 1, x.item + 1, x.timestamp);
    }
    std::fs::write(&args.out, s).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "synth: {} users × {} items, {} interactions → {}",
        d.n_users,
        d.n_items,
        d.interactions.len(),
        args.out.display()
    );
    Ok(())
}

pub fn run_split(args: SplitArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&(args.valid + args.test)) || args.valid < 0.0 || args.test < 0.0 {
        bail!("--valid and --test must be non-negative and sum to less than 1");
    }
    let parsed = data::load(&args.input, args.format)?;
    let (tr, va, te) = split::split(&parsed.records, args.valid, args.test, args.seed);
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    for (name, lists) in [("train.txt", &tr), ("valid.txt", &va), ("test.txt", &te)] {
        let path = args.out_dir.join(name);
        std::fs::write(&path, split::render(lists))
            .with_context(|| format!("writing {}", path.display()))?;
        let n: usize = lists.iter().map(|(_, i)| i.len()).sum();
        eprintln!(
            "split: {} users, {n} interactions → {}",
            lists.len(),
            path.display()
        );
    }
    Ok(())
}

/// `spec` with the fields of the JSON object `params` replaced.
fn with_params(spec: ModelSpec, params: Option<&str>) -> anyhow::Result<ModelSpec> {
    let Some(params) = params else {
        return Ok(spec);
    };
    let extra: Map<String, Value> =
        serde_json::from_str(params).context("--params must be a JSON object")?;
    let mut v = spec.params();
    if let Value::Object(o) = &mut v {
        o.extend(extra);
    }
    serde_json::from_value(v).context("--params does not fit the model")
}

fn metrics_json(m: &Metrics, k: usize) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert(format!("recall@{k}"), json!(m.recall));
    o.insert(format!("ndcg@{k}"), json!(m.ndcg));
    o.insert(format!("precision@{k}"), json!(m.precision));
    o.insert(format!("map@{k}"), json!(m.map));
    o.insert("coverage".into(), json!(m.coverage));
    o.insert("users".into(), json!(m.users));
    o
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    let started = Instant::now();
    let mut ids = IdMap::default();
    let mut text = HashMap::new();
    if let Some(items) = &args.items {
        for (ext, t) in data::load_movielens_items(items)? {
            ids.add_item(ext);
            text.insert(ext, t);
        }
    }
    let train_parsed = data::load(&args.train, args.format)?;
    let (train_x, train_report, _) = data::map_records(
        &args.train.display().to_string(),
        &train_parsed,
        &mut ids,
        true,
    );
    let valid = match &args.valid {
        Some(v) => {
            let p = data::load(v, args.format)?;
            Some(data::map_records(
                &v.display().to_string(),
                &p,
                &mut ids,
                false,
            ))
        }
        None => None,
    };
    let test_parsed = data::load(&args.test, args.format)?;
    let (mut test_x, test_report, test_unknown) = data::map_records(
        &args.test.display().to_string(),
        &test_parsed,
        &mut ids,
        false,
    );
    let train = data::training_data(&ids, train_x, &text);
    let mut reports = vec![train_report];
    reports.extend(valid.as_ref().map(|v| v.1.clone()));
    reports.push(test_report);
    let unknown_fate = if args.drop_unknown_items {
        "dropped (--drop-unknown-items)"
    } else {
        "counted as misses"
    };
    for r in &reports {
        eprintln!(
            "data: {}: {} records, {} kept, {} duplicates merged, {} unknown items {unknown_fate}, {} cold users",
            r.file, r.records, r.kept, r.duplicates, r.unknown_items, r.cold_users
        );
    }
    // Unknown items join the held-out sets past the catalogue (no model can rank them).
    let valid = valid.map(|(mut vx, report, unknown)| {
        if !args.drop_unknown_items {
            vx.extend(data::unknown_as_interactions(&unknown, train.n_items));
        }
        (vx, report)
    });
    let unknown_test_pairs = test_unknown.len();
    if !args.drop_unknown_items {
        test_x.extend(data::unknown_as_interactions(&test_unknown, train.n_items));
    }
    let hist = engine::histories(&train);
    let (truth, seen_dropped) = holdout(&hist, &test_x);
    if seen_dropped > 0 {
        eprintln!("data: {seen_dropped} test pairs already in training dropped (they are masked)");
    }
    eprintln!(
        "data: {} users, {} items, {} training interactions, {} test users (loaded in {:.2}s)",
        train.n_users,
        train.n_items,
        train.interactions.len(),
        truth.len(),
        started.elapsed().as_secs_f64()
    );

    let clock = Instant::now();
    let mut out = Map::new();
    let ranked_lists: Vec<Vec<ItemIdx>>;
    if let Some(lists) = &args.score_lists {
        let parsed = data::load(lists, Format::Lists)?;
        let mut ranked: HashMap<u32, Vec<ItemIdx>> = HashMap::new();
        let mut unknown = 0usize;
        for r in &parsed.records {
            let (Some(&u), Some(&i)) = (ids.users.get(&r.user), ids.items.get(&r.item)) else {
                unknown += 1;
                continue;
            };
            let seen = hist[u as usize].binary_search_by_key(&i, |p| p.0).is_ok();
            let list = ranked.entry(u).or_default();
            if !seen && !list.contains(&i) {
                list.push(i);
            }
        }
        if unknown > 0 {
            eprintln!("score-lists: {unknown} entries with unknown users or items skipped");
        }
        ranked_lists = truth
            .iter()
            .map(|(u, _)| ranked.get(u).cloned().unwrap_or_default())
            .collect();
        out.insert("model".into(), json!(format!("lists:{}", lists.display())));
        out.insert("params".into(), json!({}));
    } else {
        let tune_families = match (args.model.as_str(), args.tune) {
            ("auto", _) => Some((TuneOptions::default().families, None)),
            ("hybrid", true) => Some((TuneOptions::default().families, Some(ModelKind::Hybrid))),
            (name, true) => Some((vec![ModelSpec::parse(name)?.kind()], None)),
            _ => None,
        };
        let (model, spec): (std::sync::Arc<dyn Recommender>, ModelSpec) =
            match (tune_families, &valid) {
                (Some((families, pick)), Some((vx, _))) => {
                    eprintln!("tune: tuning {families:?} on --valid");
                    let opts = TuneOptions {
                        k: args.k,
                        verbose: true,
                        families,
                        pick,
                    };
                    let tuned = train_best(&train, vx, &opts)?;
                    eprintln!("tune: chose {}", tuned.why);
                    out.insert(
                        "validation".into(),
                        Value::Object(metrics_json(&tuned.validation, args.k)),
                    );
                    out.insert("trials".into(), json!(tuned.trials.len()));
                    out.insert("why".into(), json!(tuned.why));
                    (tuned.model, tuned.spec)
                }
                (Some(_), None) => {
                    let name = if args.model == "auto" {
                        "hybrid"
                    } else {
                        args.model.as_str()
                    };
                    eprintln!("eval: tuning needs --valid: using the default {name}");
                    let spec = with_params(ModelSpec::parse(name)?, args.params.as_deref())?;
                    (engine::build(&spec, &train)?, spec)
                }
                (None, _) => {
                    let spec = with_params(ModelSpec::parse(&args.model)?, args.params.as_deref())?;
                    (engine::build(&spec, &train)?, spec)
                }
            };
        eprintln!(
            "eval: trained {} in {:.2}s; ranking",
            model.name(),
            clock.elapsed().as_secs_f64()
        );
        ranked_lists = rank_lists(model.as_ref(), &train, &hist, &truth, args.k);
        out.insert("model".into(), json!(model.name()));
        out.insert("params".into(), spec.params());
    }
    let metrics = score_lists(&ranked_lists, &truth, args.k, train.n_items);
    let seconds = clock.elapsed().as_secs_f64();
    let buckets: Vec<Value> = by_activity(&ranked_lists, &truth, &hist, args.k, train.n_items)
        .iter()
        .map(|b| {
            let mut o = metrics_json(&b.metrics, args.k);
            o.insert("min_train_items".into(), json!(b.min_train_items));
            o.insert("max_train_items".into(), json!(b.max_train_items));
            Value::Object(o)
        })
        .collect();
    let mut obj = metrics_json(&metrics, args.k);
    obj.extend(out);
    obj.insert("by_activity".into(), Value::Array(buckets));
    obj.insert(
        "unknown_test_items".into(),
        json!({
            "pairs": unknown_test_pairs,
            "counted_as_misses": !args.drop_unknown_items,
        }),
    );
    obj.insert("seconds".into(), json!(seconds));
    obj.insert("seed".into(), json!(args.seed));
    obj.insert("data".into(), json!(reports));
    obj.insert("test_pairs_already_in_train".into(), json!(seen_dropped));
    if args.json {
        println!("{}", Value::Object(obj));
    } else {
        let k = args.k;
        println!("model        {}", obj["model"].as_str().unwrap_or_default());
        println!("users        {}", metrics.users);
        println!("recall@{k:<5} {:.4}", metrics.recall);
        println!("ndcg@{k:<7} {:.4}", metrics.ndcg);
        println!("precision@{k:<2} {:.4}", metrics.precision);
        println!("map@{k:<8} {:.4}", metrics.map);
        println!("coverage     {:.4}", metrics.coverage);
        println!("unknown test items {unknown_test_pairs} ({unknown_fate})");
        for b in &obj["by_activity"].as_array().cloned().unwrap_or_default() {
            let range = match b["max_train_items"].as_u64() {
                Some(hi) => format!("{}-{hi}", b["min_train_items"]),
                None => format!("{}+", b["min_train_items"]),
            };
            println!(
                "  train items {range:<8} users {:<5} recall@{k} {:.4}  ndcg@{k} {:.4}",
                b["users"],
                b[format!("recall@{k}")].as_f64().unwrap_or_default(),
                b[format!("ndcg@{k}")].as_f64().unwrap_or_default()
            );
        }
        println!("seconds      {seconds:.2}");
    }
    Ok(())
}
