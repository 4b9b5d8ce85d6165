//! Importing interactions from files: MovieLens `u.data` (`user<TAB>item<TAB>rating<TAB>ts`)
//! and CSV (`user,item,timestamp,weight`, header line optional).
//!
//! Every file is parsed and validated completely before anything is written; the first
//! bad line fails the import with `FILE:LINE: what is wrong`, and nothing is imported.
//! The rows of all files are then written in one transaction, creating missing users
//! and items.

use std::path::{Path, PathBuf};

use contract::{ItemId, UserId};
use thiserror::Error;

use crate::config::ImportFormat;
use crate::store::sqlite::Database;
use crate::store::{Batch, InteractionRow, StoreError};

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
}

fn is_header(fields: &[&str]) -> bool {
    let names: Vec<String> = fields
        .iter()
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    names.first().is_some_and(|f| f == "user" || f == "user_id")
        && names.get(2).is_some_and(|f| f.parse::<i64>().is_err())
}

/// Parses one line into an interaction, or says what is wrong with it.
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
    let user = UserId::parse(fields[0].trim()).map_err(|e| e.to_string())?;
    let item = ItemId::parse(fields[1].trim()).map_err(|e| e.to_string())?;
    let (weight_raw, ts_raw, weight_name) = match format {
        ImportFormat::Movielens => (fields[2].trim(), fields[3].trim(), "rating"),
        ImportFormat::Csv => (fields[3].trim(), fields[2].trim(), "weight"),
    };
    let weight: f32 = weight_raw
        .parse()
        .map_err(|_| format!("{weight_name} {weight_raw:?} is not a number"))?;
    let weight_ok = match format {
        ImportFormat::Movielens => (0.5..=5.0).contains(&weight),
        ImportFormat::Csv => weight.is_finite() && (0.0..=1e6).contains(&weight),
    };
    if !weight_ok {
        let range = match format {
            ImportFormat::Movielens => "0.5 to 5",
            ImportFormat::Csv => "0 to 1000000",
        };
        return Err(format!("{weight_name} {weight_raw} is not in {range}"));
    }
    let ts: i64 = ts_raw
        .parse()
        .map_err(|_| format!("timestamp {ts_raw:?} is not a whole number of unix seconds"))?;
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

/// Parses and validates a whole file.
pub fn parse_file(format: ImportFormat, path: &Path) -> Result<Vec<InteractionRow>, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: file.clone(),
        source,
    })?;
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        if i == 0 && format == ImportFormat::Csv && is_header(&line.split(',').collect::<Vec<_>>())
        {
            continue;
        }
        let row = parse_line(format, line).map_err(|what| ImportError::Line {
            file: file.clone(),
            line: i + 1,
            what,
        })?;
        rows.push(row);
    }
    Ok(rows)
}

/// Validates every file, then writes all their rows in one transaction.
pub fn import_files(
    store: &mut Database,
    format: ImportFormat,
    files: &[PathBuf],
) -> Result<ImportSummary, ImportError> {
    let mut batch = Batch::default();
    for f in files {
        batch.interactions.extend(parse_file(format, f)?);
    }
    let before = store.counts()?;
    store.insert_batch(&batch)?;
    let after = store.counts()?;
    Ok(ImportSummary {
        files: files.len(),
        interactions: batch.interactions.len() as u64,
        users: after.users - before.users,
        items: after.items - before.items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Database {
        Database::open(&dir.path().join("i.sqlite")).unwrap()
    }

    #[test]
    fn a_csv_with_a_header_imports_and_creates_users_and_items() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        std::fs::write(
            &f,
            "user,item,timestamp,weight\nu1,i1,100,1\nu1,i2,101,2.5\r\nu2,i1,102,1\n",
        )
        .unwrap();
        let mut s = store(&dir);
        let sum = import_files(&mut s, ImportFormat::Csv, &[f]).unwrap();
        assert_eq!(sum.interactions, 3);
        assert_eq!(sum.users, 2);
        assert_eq!(sum.items, 2);
        assert_eq!(s.user_history("u1").unwrap()[1].weight, 2.5);
    }

    #[test]
    fn a_bad_line_3_imports_nothing_and_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(&good, "u9,i9,1,1\n").unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "u1,i1,100,1\nu2,i2,101,1\nu3,../etc,102,1\nu4,i4,103,1\n",
        )
        .unwrap();
        let mut s = store(&dir);
        let err = import_files(&mut s, ImportFormat::Csv, &[good, bad.clone()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", bad.display())), "{msg}");
        assert!(msg.contains("item id"), "{msg}");
        assert_eq!(s.counts().unwrap(), Default::default());
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

    #[test]
    fn the_movielens_100k_file_imports_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-100k/u.data");
        if !path.exists() {
            println!("skipping: {} is not present", path.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        let sum = import_files(&mut s, ImportFormat::Movielens, &[path]).unwrap();
        assert_eq!(sum.interactions, 100_000);
        assert_eq!(sum.users, 943);
        assert_eq!(sum.items, 1682);
    }
}
