//! Importing interactions from files: MovieLens `u.data` (`user<TAB>item<TAB>rating<TAB>ts`)
//! and CSV, read by the `csv` crate (quoted fields, any delimiter).
//!
//! A CSV file is `user,item,timestamp,weight` (header line optional), or, with a column
//! mapping (`--columns user=userId,item=movieId,weight=rating,timestamp=timestamp`), any
//! file with a header naming those columns in any order, other columns ignored; weight
//! and timestamp may be left out (1 and 0). With `--min-weight`, rows below it are skipped
//! and the others count as 1 (ratings made implicit).
//!
//! Every file is parsed and validated completely before anything is written; the first
//! bad line fails the import with `FILE:LINE: what is wrong`, and nothing is imported.
//! The rows of all files are then written through [`Store::import`] in one transaction
//! (SQLite or PostgreSQL alike), creating missing users and items.

use std::path::{Path, PathBuf};

use contract::{ItemId, UserId};
use thiserror::Error;

use crate::store::{Batch, InteractionRow, Store, StoreError};

/// Input file formats of `origin import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// MovieLens `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`.
    Movielens,
    /// `user,item,timestamp,weight`, header line optional.
    Csv,
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {what}")]
    Line {
        file: String,
        line: usize,
        what: String,
    },
    #[error("--columns: {0}")]
    Columns(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: usize,
    pub interactions: u64,
    pub users: u64,
    pub items: u64,
    /// Rows skipped for a weight under `--min-weight`.
    pub below_min_weight: u64,
}

/// Which header column holds each field of an interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    pub user: String,
    pub item: String,
    pub weight: Option<String>,
    pub timestamp: Option<String>,
}

impl ColumnMap {
    /// Parses `user=COL,item=COL[,weight=COL][,timestamp=COL]`.
    pub fn parse(spec: &str) -> Result<Self, ImportError> {
        let bad = |what: String| ImportError::Columns(what);
        let (mut user, mut item, mut weight, mut timestamp) = (None, None, None, None);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, column) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not FIELD=COLUMN")))?;
            let column = column.trim();
            if column.is_empty() || column.len() > 200 {
                return Err(bad(format!("{field}: a column name of 1 to 200 bytes")));
            }
            let slot = match field.trim() {
                "user" => &mut user,
                "item" => &mut item,
                "weight" => &mut weight,
                "timestamp" => &mut timestamp,
                other => {
                    return Err(bad(format!(
                        "unknown field {other:?}: use user, item, weight, timestamp"
                    )))
                }
            };
            if slot.replace(column.to_owned()).is_some() {
                return Err(bad(format!("{} is mapped twice", field.trim())));
            }
        }
        Ok(ColumnMap {
            user: user.ok_or_else(|| bad("user=COLUMN is required".into()))?,
            item: item.ok_or_else(|| bad("item=COLUMN is required".into()))?,
            weight,
            timestamp,
        })
    }
}

/// How to read the files.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub format: ImportFormat,
    /// CSV only: columns by header name.
    pub columns: Option<ColumnMap>,
    /// Skip rows whose weight is below this; the rest count as weight 1.
    pub min_weight: Option<f32>,
    /// CSV only: the field delimiter.
    pub delimiter: u8,
}

impl ImportOptions {
    /// The plain format, no mapping, no threshold, comma-delimited.
    pub fn new(format: ImportFormat) -> Self {
        ImportOptions {
            format,
            columns: None,
            min_weight: None,
            delimiter: b',',
        }
    }
}

fn is_header(fields: &[&str]) -> bool {
    let names: Vec<String> = fields
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    names.first().is_some_and(|f| f == "user" || f == "user_id")
        && names.get(2).is_some_and(|f| f.parse::<i64>().is_err())
}

/// Checks and builds one interaction from its raw fields.
fn interaction(
    format: ImportFormat,
    user: &str,
    item: &str,
    weight_raw: Option<&str>,
    ts_raw: Option<&str>,
) -> Result<InteractionRow, String> {
    let user = UserId::parse(user.trim()).map_err(|e| e.to_string())?;
    let item = ItemId::parse(item.trim()).map_err(|e| e.to_string())?;
    let weight_name = match format {
        ImportFormat::Movielens => "rating",
        ImportFormat::Csv => "weight",
    };
    let weight: f32 = match weight_raw.map(str::trim) {
        None => 1.0,
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("{weight_name} {raw:?} is not a number"))?,
    };
    let weight_ok = match format {
        ImportFormat::Movielens => (0.5..=5.0).contains(&weight),
        ImportFormat::Csv => weight.is_finite() && (0.0..=1e6).contains(&weight),
    };
    if !weight_ok {
        let range = match format {
            ImportFormat::Movielens => "0.5 to 5",
            ImportFormat::Csv => "0 to 1000000",
        };
        return Err(format!("{weight_name} {weight} is not in {range}"));
    }
    let ts: i64 = match ts_raw.map(str::trim) {
        None => 0,
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("timestamp {raw:?} is not a whole number of unix seconds"))?,
    };
    if !(0..=32_503_680_000).contains(&ts) {
        return Err(format!("timestamp {ts} is not between 1970 and 3000"));
    }
    Ok(InteractionRow {
        user_id: user.as_str().to_owned(),
        item_id: item.as_str().to_owned(),
        weight,
        ts,
    })
}

/// Parses one MovieLens (or plain comma-separated) line into an interaction, or says
/// what is wrong with it.
fn parse_line(format: ImportFormat, line: &str) -> Result<InteractionRow, String> {
    let (fields, sep_name): (Vec<&str>, &str) = match format {
        ImportFormat::Movielens => (line.split('\t').collect(), "tab-separated"),
        ImportFormat::Csv => (line.split(',').collect(), "comma-separated"),
    };
    if fields.len() != 4 {
        return Err(format!(
            "expected 4 {sep_name} fields, found {}",
            fields.len()
        ));
    }
    match format {
        ImportFormat::Movielens => interaction(
            format,
            fields[0],
            fields[1],
            Some(fields[2]),
            Some(fields[3]),
        ),
        ImportFormat::Csv => interaction(
            format,
            fields[0],
            fields[1],
            Some(fields[3]),
            Some(fields[2]),
        ),
    }
}

/// Applies `--min-weight`: `None` for a row below it, else the row with weight 1.
fn threshold(row: InteractionRow, min_weight: Option<f32>) -> Option<InteractionRow> {
    match min_weight {
        None => Some(row),
        Some(min) if row.weight < min => None,
        Some(_) => Some(InteractionRow { weight: 1.0, ..row }),
    }
}

/// Rows of a file, and how many were below `--min-weight`.
type Parsed = (Vec<InteractionRow>, u64);

fn read_text(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: path.display().to_string(),
        source,
    })
}

fn parse_movielens(path: &Path, options: &ImportOptions) -> Result<Parsed, ImportError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let (mut rows, mut below) = (Vec::new(), 0);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_line(options.format, line).map_err(|what| ImportError::Line {
            file: file.clone(),
            line: i + 1,
            what,
        })?;
        match threshold(row, options.min_weight) {
            Some(row) => rows.push(row),
            None => below += 1,
        }
    }
    Ok((rows, below))
}

fn parse_csv(path: &Path, options: &ImportOptions) -> Result<Parsed, ImportError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .from_reader(text.as_bytes());
    let at = |line: usize, what: String| ImportError::Line {
        file: file.clone(),
        line,
        what,
    };
    // Column indices of user, item, weight, timestamp.
    let mut index: Option<(usize, usize, Option<usize>, Option<usize>)> = None;
    let (mut rows, mut below) = (Vec::new(), 0);
    let mut first = true;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            at(line, format!("not valid CSV: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let is_first = std::mem::replace(&mut first, false);
        let (u, i, w, t) = match (&options.columns, index) {
            (_, Some(idx)) => idx,
            (Some(map), None) => {
                let find = |name: &str| -> Result<usize, ImportError> {
                    fields
                        .iter()
                        .position(|f| f.trim().eq_ignore_ascii_case(name))
                        .ok_or_else(|| {
                            let found: Vec<&str> =
                                fields.iter().map(|f| f.trim()).take(20).collect();
                            at(
                                line,
                                format!("no column {name:?} in the header (found {found:?})"),
                            )
                        })
                };
                let idx = (
                    find(&map.user)?,
                    find(&map.item)?,
                    map.weight.as_deref().map(find).transpose()?,
                    map.timestamp.as_deref().map(find).transpose()?,
                );
                index = Some(idx);
                continue;
            }
            (None, None) => {
                if fields.len() != 4 {
                    return Err(at(
                        line,
                        format!(
                            "expected 4 fields (user,item,timestamp,weight), found {}",
                            fields.len()
                        ),
                    ));
                }
                index = Some((0, 1, Some(3), Some(2)));
                if is_first && is_header(&fields) {
                    continue;
                }
                (0, 1, Some(3), Some(2))
            }
        };
        let needed = [Some(u), Some(i), w, t]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        if fields.len() <= needed {
            return Err(at(
                line,
                format!(
                    "{} fields, but the columns need at least {}",
                    fields.len(),
                    needed + 1
                ),
            ));
        }
        let row = interaction(
            options.format,
            fields[u],
            fields[i],
            w.map(|w| fields[w]),
            t.map(|t| fields[t]),
        )
        .map_err(|what| {
            let looks_like_header = fields[2..].iter().any(|f| f.trim().parse::<f64>().is_err());
            if is_first && options.columns.is_none() && looks_like_header {
                let found: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
                at(
                    line,
                    format!(
                        "this looks like a header {found:?}, not user,item,timestamp,weight: \
                         name the columns with --columns user=COL,item=COL,weight=COL,timestamp=COL"
                    ),
                )
            } else {
                at(line, what)
            }
        })?;
        match threshold(row, options.min_weight) {
            Some(row) => rows.push(row),
            None => below += 1,
        }
    }
    if options.columns.is_some() && index.is_none() {
        return Err(at(1, "the file has no header line".into()));
    }
    Ok((rows, below))
}

/// Parses and validates a whole file.
pub fn parse_file(options: &ImportOptions, path: &Path) -> Result<Parsed, ImportError> {
    match options.format {
        ImportFormat::Movielens => parse_movielens(path, options),
        ImportFormat::Csv => parse_csv(path, options),
    }
}

/// Validates every file (on the blocking pool: reading and parsing), then writes all
/// their rows into `store` in one transaction. Needs a tokio runtime.
pub async fn import_files(
    store: &dyn Store,
    options: &ImportOptions,
    files: &[PathBuf],
) -> Result<ImportSummary, ImportError> {
    if options.format == ImportFormat::Movielens && options.columns.is_some() {
        return Err(ImportError::Columns(
            "a column mapping needs --format csv (MovieLens u.data has no header)".into(),
        ));
    }
    let (options, paths) = (options.clone(), files.to_vec());
    let (batch, below_min_weight) = tokio::task::spawn_blocking(move || {
        let mut batch = Batch::default();
        let mut below_min_weight = 0;
        for f in &paths {
            let (rows, below) = parse_file(&options, f)?;
            batch.interactions.extend(rows);
            below_min_weight += below;
        }
        Ok::<_, ImportError>((batch, below_min_weight))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    let interactions = batch.interactions.len() as u64;
    let before = store.counts().await?;
    store.import(batch).await?;
    let after = store.counts().await?;
    Ok(ImportSummary {
        files: files.len(),
        interactions,
        users: after.users.saturating_sub(before.users),
        items: after.items.saturating_sub(before.items),
        below_min_weight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::sqlite::Database;
    use crate::store::SqliteStore;

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("i.sqlite"), 1).unwrap()
    }

    /// A connection of its own to the store's file, for checking what it holds.
    fn db(dir: &tempfile::TempDir) -> Database {
        Database::open(&dir.path().join("i.sqlite")).unwrap()
    }

    #[tokio::test]
    async fn a_csv_with_a_header_imports_and_creates_users_and_items() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        std::fs::write(
            &f,
            "user,item,timestamp,weight\nu1,i1,100,1\nu1,i2,101,2.5\r\nu2,i1,102,1\n",
        )
        .unwrap();
        let s = store(&dir);
        let sum = import_files(&s, &ImportOptions::new(ImportFormat::Csv), &[f])
            .await
            .unwrap();
        assert_eq!(sum.interactions, 3);
        assert_eq!(sum.users, 2);
        assert_eq!(sum.items, 2);
        assert_eq!(db(&dir).user_history("u1").unwrap()[1].weight, 2.5);
    }

    #[tokio::test]
    async fn a_bad_line_3_imports_nothing_and_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(&good, "u9,i9,1,1\n").unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "u1,i1,100,1\nu2,i2,101,1\nu3,../etc,102,1\nu4,i4,103,1\n",
        )
        .unwrap();
        let s = store(&dir);
        let err = import_files(
            &s,
            &ImportOptions::new(ImportFormat::Csv),
            &[good, bad.clone()],
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", bad.display())), "{msg}");
        assert!(msg.contains("item id"), "{msg}");
        assert_eq!(db(&dir).counts().unwrap(), Default::default());
    }

    #[test]
    fn movielens_lines_need_four_fields_and_a_rating_in_range() {
        assert!(parse_line(ImportFormat::Movielens, "196\t242\t3\t881250949").is_ok());
        let e = parse_line(ImportFormat::Movielens, "196\t242\t3").unwrap_err();
        assert!(e.contains("expected 4"), "{e}");
        let e = parse_line(ImportFormat::Movielens, "196\t242\t9\t881250949").unwrap_err();
        assert!(e.contains("rating 9"), "{e}");
        let e = parse_line(ImportFormat::Movielens, "196\t242\t3\tsoon").unwrap_err();
        assert!(e.contains("timestamp"), "{e}");
    }

    #[tokio::test]
    async fn the_movielens_100k_file_imports_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-100k/u.data");
        if !path.exists() {
            println!("skipping: {} is not present", path.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let sum = import_files(&s, &ImportOptions::new(ImportFormat::Movielens), &[path])
            .await
            .unwrap();
        assert_eq!(sum.interactions, 100_000);
        assert_eq!(sum.users, 943);
        assert_eq!(sum.items, 1682);
    }

    #[tokio::test]
    async fn a_mapped_header_in_any_order_with_quoted_fields_imports() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ratings.csv");
        std::fs::write(
            &f,
            "userId,movieId,rating,timestamp,title\n\
             1,31,2.5,1260759144,\"Dangerous Minds, the movie\"\n\
             \"1\",1029,3.0,1260759179,\"Dumbo\"\n\
             2,10,4.0,835355493,\"GoldenEye (\"\"007\"\")\"\n",
        )
        .unwrap();
        let mut options = ImportOptions::new(ImportFormat::Csv);
        options.columns = Some(
            ColumnMap::parse("user=userId,item=movieId,weight=rating,timestamp=timestamp").unwrap(),
        );
        let s = store(&dir);
        let sum = import_files(&s, &options, std::slice::from_ref(&f))
            .await
            .unwrap();
        assert_eq!(sum.interactions, 3);
        let h = db(&dir).user_history("1").unwrap();
        assert_eq!(
            (h[0].item_id.as_str(), h[0].weight, h[0].ts),
            ("31", 2.5, 1_260_759_144)
        );
        // Ratings made implicit: below 3 skipped, the rest weigh 1.
        options.min_weight = Some(3.0);
        let dir2 = tempfile::tempdir().unwrap();
        let s2 = store(&dir2);
        let sum = import_files(&s2, &options, &[f]).await.unwrap();
        assert_eq!((sum.interactions, sum.below_min_weight), (2, 1));
        assert!(db(&dir2)
            .user_history("1")
            .unwrap()
            .iter()
            .all(|r| r.weight == 1.0));
    }

    #[tokio::test]
    async fn the_old_header_order_without_a_mapping_names_the_line_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.csv");
        std::fs::write(&f, "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n").unwrap();
        let s = store(&dir);
        let err = import_files(&s, &ImportOptions::new(ImportFormat::Csv), &[f])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1: "), "{err}");
        assert!(err.contains("--columns user="), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_line_or_a_missing_column_fails_the_file_with_its_line_and_stores_nothing()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ImportOptions::new(ImportFormat::Csv);
        options.columns = Some(ColumnMap::parse("user=u,item=i").unwrap());
        let short = dir.path().join("short.csv");
        std::fs::write(&short, "u,i,x\na,b,1\nc\nd,e,2\n").unwrap();
        let s = store(&dir);
        let err = import_files(&s, &options, std::slice::from_ref(&short))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:3: ", short.display())),
            "{err}"
        );
        assert_eq!(db(&dir).counts().unwrap(), Default::default());
        let missing = dir.path().join("missing.csv");
        std::fs::write(&missing, "user,thing\na,b\n").unwrap();
        let err = import_files(&s, &options, &[missing])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1: no column \"u\""), "{err}");
        assert_eq!(db(&dir).counts().unwrap(), Default::default());
    }

    #[test]
    fn column_maps_need_user_and_item_and_refuse_unknown_or_repeated_fields() {
        let m = ColumnMap::parse("item=b, user=a").unwrap();
        assert_eq!(
            (m.user.as_str(), m.item.as_str(), m.weight),
            ("a", "b", None)
        );
        for bad in [
            "",
            "user=a",
            "user=a,item=b,color=c",
            "user=a,user=b,item=c",
            "user,item=b",
        ] {
            assert!(ColumnMap::parse(bad).is_err(), "{bad:?}");
        }
    }
}
