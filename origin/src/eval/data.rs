//! Loading interaction files for offline evaluation.
//!
//! Formats (integer ids, any non-negative `u64`):
//! - `lists`: one user per line, `user item item ...`, whitespace-separated.
//! - `movielens`: MovieLens `u.data`, `user item rating timestamp` separated by tabs;
//!   every rating counts as one implicit interaction (weight 1).
//! - `csv`: `user,item[,timestamp[,weight]]`; a header line is allowed.
//!
//! Blank lines and lines starting with `#` are skipped. A malformed line fails with
//! `FILE:LINE: reason`. External ids are mapped to dense indices: users from every file
//! (a test user absent from training is a cold user), items from the training file (and
//! the `--items` catalogue when given). Repeated `(user, item)` pairs are merged and
//! test/validation items outside the catalogue are kept out of the interactions and
//! returned apart (`origin eval` counts them as relevant items every model misses); both
//! are counted in a [`FileReport`], never dropped silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{Interaction, ItemText, TrainingData};

/// The input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Lists,
    Movielens,
    Csv,
}

/// Why a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Malformed {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One parsed record with external ids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    pub user: u64,
    pub item: u64,
    pub weight: f32,
    pub timestamp: i64,
}

/// Parsed records of one file, and lines that name a user with no items (`lists`).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub records: Vec<Record>,
    pub users_without_items: Vec<u64>,
}

fn malformed(file: &Path, line: usize, reason: impl Into<String>) -> LoadError {
    LoadError::Malformed {
        file: file.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn id(file: &Path, line: usize, what: &str, s: &str) -> Result<u64, LoadError> {
    s.trim().parse::<u64>().map_err(|_| {
        malformed(
            file,
            line,
            format!("{what} id {s:?} is not a non-negative integer"),
        )
    })
}

/// Parses `text` (the contents of `file`) in `format`.
pub fn parse(file: &Path, text: &str, format: Format) -> Result<Parsed, LoadError> {
    let mut out = Parsed::default();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match format {
            Format::Lists => {
                let mut fields = l.split_whitespace();
                let user = id(file, line, "user", fields.next().unwrap_or_default())?;
                let mut any = false;
                for f in fields {
                    let item = id(file, line, "item", f)?;
                    any = true;
                    out.records.push(Record {
                        user,
                        item,
                        weight: 1.0,
                        timestamp: 0,
                    });
                }
                if !any {
                    out.users_without_items.push(user);
                }
            }
            Format::Movielens => {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() != 4 {
                    return Err(malformed(
                        file,
                        line,
                        format!(
                            "expected 4 tab-separated fields (user item rating timestamp), got {}",
                            f.len()
                        ),
                    ));
                }
                let user = id(file, line, "user", f[0])?;
                let item = id(file, line, "item", f[1])?;
                f[2].trim().parse::<f32>().map_err(|_| {
                    malformed(file, line, format!("rating {:?} is not a number", f[2]))
                })?;
                let timestamp = f[3].trim().parse::<i64>().map_err(|_| {
                    malformed(
                        file,
                        line,
                        format!("timestamp {:?} is not an integer", f[3]),
                    )
                })?;
                out.records.push(Record {
                    user,
                    item,
                    weight: 1.0,
                    timestamp,
                });
            }
            Format::Csv => {
                let f: Vec<&str> = l.split(',').map(str::trim).collect();
                if line == 1 && f[0].parse::<u64>().is_err() {
                    continue; // header
                }
                if !(2..=4).contains(&f.len()) {
                    return Err(malformed(
                        file,
                        line,
                        format!(
                            "expected user,item[,timestamp[,weight]], got {} fields",
                            f.len()
                        ),
                    ));
                }
                let user = id(file, line, "user", f[0])?;
                let item = id(file, line, "item", f[1])?;
                let timestamp = match f.get(2) {
                    Some(t) if !t.is_empty() => t.parse::<i64>().map_err(|_| {
                        malformed(file, line, format!("timestamp {t:?} is not an integer"))
                    })?,
                    _ => 0,
                };
                let weight = match f.get(3) {
                    Some(w) if !w.is_empty() => {
                        let w = w.parse::<f32>().map_err(|_| {
                            malformed(file, line, format!("weight {w:?} is not a number"))
                        })?;
                        if !(w.is_finite() && w > 0.0) {
                            return Err(malformed(
                                file,
                                line,
                                format!("weight {w} must be positive"),
                            ));
                        }
                        w
                    }
                    _ => 1.0,
                };
                out.records.push(Record {
                    user,
                    item,
                    weight,
                    timestamp,
                });
            }
        }
    }
    Ok(out)
}

/// Reads and parses a file.
pub fn load(path: &Path, format: Format) -> Result<Parsed, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let text =
        String::from_utf8(bytes).map_err(|e| malformed(path, 0, format!("not UTF-8: {e}")))?;
    parse(path, &text, format)
}

/// Counts of what happened to one file's records.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileReport {
    pub file: String,
    pub records: usize,
    pub kept: usize,
    /// Repeated `(user, item)` pairs merged into one (largest weight, newest timestamp).
    pub duplicates: usize,
    /// Records whose item is not in the training catalogue (validation/test only); `origin
    /// eval` counts them as misses unless `--drop-unknown-items`.
    pub unknown_items: usize,
    /// Users not in the training file (validation/test only): scored as cold users.
    pub cold_users: usize,
}

/// Maps external ids to dense indices.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    pub users: HashMap<u64, u32>,
    pub user_ids: Vec<u64>,
    pub items: HashMap<u64, u32>,
    pub item_ids: Vec<u64>,
}

impl IdMap {
    pub fn user(&mut self, ext: u64) -> u32 {
        let next = self.user_ids.len() as u32;
        *self.users.entry(ext).or_insert_with(|| {
            self.user_ids.push(ext);
            next
        })
    }

    pub fn add_item(&mut self, ext: u64) -> u32 {
        let next = self.item_ids.len() as u32;
        *self.items.entry(ext).or_insert_with(|| {
            self.item_ids.push(ext);
            next
        })
    }
}

/// A test/validation pair whose item is not in the training catalogue: `(user, external item)`.
pub type UnknownPair = (u32, u64);

/// Maps `parsed` to interactions; `grow_items` adds unknown items to the catalogue
/// (training), otherwise they are left out of the interactions, counted, and returned
/// (distinct pairs) so the caller can count them as relevant items a model cannot hit.
pub fn map_records(
    name: &str,
    parsed: &Parsed,
    ids: &mut IdMap,
    grow_items: bool,
) -> (Vec<Interaction>, FileReport, Vec<UnknownPair>) {
    let mut report = FileReport {
        file: name.to_string(),
        records: parsed.records.len(),
        ..FileReport::default()
    };
    let known_users = ids.user_ids.len();
    let mut cold: std::collections::HashSet<u32> = Default::default();
    let mut index: HashMap<(u32, u32), usize> = HashMap::new();
    let mut out: Vec<Interaction> = Vec::with_capacity(parsed.records.len());
    let mut unknown: Vec<UnknownPair> = Vec::new();
    for u in &parsed.users_without_items {
        ids.user(*u);
    }
    for r in &parsed.records {
        let user = ids.user(r.user);
        if user as usize >= known_users && !grow_items {
            cold.insert(user);
        }
        let item = if grow_items {
            ids.add_item(r.item)
        } else {
            match ids.items.get(&r.item) {
                Some(&i) => i,
                None => {
                    report.unknown_items += 1;
                    unknown.push((user, r.item));
                    continue;
                }
            }
        };
        match index.get(&(user, item)) {
            Some(&at) => {
                report.duplicates += 1;
                let x = &mut out[at];
                x.weight = x.weight.max(r.weight);
                x.timestamp = x.timestamp.max(r.timestamp);
            }
            None => {
                index.insert((user, item), out.len());
                out.push(Interaction {
                    user,
                    item,
                    weight: r.weight,
                    timestamp: r.timestamp,
                });
            }
        }
    }
    report.kept = out.len();
    report.cold_users = cold.len();
    unknown.sort_unstable();
    unknown.dedup();
    (out, report, unknown)
}

/// Relabels unknown pairs as interactions with items `n_items..` (one index per distinct
/// external item, in id order), past every model's catalogue.
pub fn unknown_as_interactions(pairs: &[UnknownPair], n_items: usize) -> Vec<Interaction> {
    let mut ext: Vec<u64> = pairs.iter().map(|p| p.1).collect();
    ext.sort_unstable();
    ext.dedup();
    pairs
        .iter()
        .map(|&(user, e)| Interaction {
            user,
            item: (n_items + ext.binary_search(&e).unwrap_or(0)) as u32,
            weight: 1.0,
            timestamp: 0,
        })
        .collect()
}

/// The 19 genres of MovieLens 100K, in `u.item` column order.
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Reads MovieLens `u.item` (Latin-1, `id|title|date|video|url|19 genre flags`) into
/// `(external item id, text)`.
pub fn load_movielens_items(path: &Path) -> Result<Vec<(u64, ItemText)>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let text: String = bytes.iter().map(|&b| b as char).collect(); // Latin-1
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('|').collect();
        if f.len() < 5 {
            return Err(malformed(
                path,
                n + 1,
                format!("expected id|title|...|genres, got {} fields", f.len()),
            ));
        }
        let ext = id(path, n + 1, "item", f[0])?;
        let categories = f[5..]
            .iter()
            .zip(ML100K_GENRES)
            .filter(|(flag, _)| flag.trim() == "1")
            .map(|(_, g)| g.to_string())
            .collect();
        out.push((
            ext,
            ItemText {
                title: f[1].to_string(),
                categories,
                tags: vec![],
                description: String::new(),
            },
        ));
    }
    Ok(out)
}

/// Training data from mapped interactions; `text` by external item id.
pub fn training_data(
    ids: &IdMap,
    interactions: Vec<Interaction>,
    text: &HashMap<u64, ItemText>,
) -> TrainingData {
    TrainingData {
        n_users: ids.user_ids.len(),
        n_items: ids.item_ids.len(),
        interactions,
        item_text: if text.is_empty() {
            vec![]
        } else {
            ids.item_ids
                .iter()
                .map(|e| text.get(e).cloned().unwrap_or_default())
                .collect()
        },
        user_region: vec![None; ids.user_ids.len()],
        user_weight: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_fail_with_file_and_line() {
        let f = Path::new("t.txt");
        let e = parse(f, "1 2 3\n\n2 x\n", Format::Lists).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.txt:3: item id \"x\" is not a non-negative integer"
        );
        let e = parse(f, "1\t2\t5\n", Format::Movielens).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("t.txt:1: expected 4 tab-separated fields"));
        let e = parse(f, "user,item\n1,2,3,-1\n", Format::Csv).unwrap_err();
        assert_eq!(e.to_string(), "t.txt:2: weight -1 must be positive");
    }

    #[test]
    fn all_three_formats_parse() {
        let f = Path::new("t");
        let p = parse(f, "7 1 2\n8\n", Format::Lists).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.users_without_items, vec![8]);
        let p = parse(f, "196\t242\t3\t881250949\n", Format::Movielens).unwrap();
        assert_eq!(
            p.records[0],
            Record {
                user: 196,
                item: 242,
                weight: 1.0,
                timestamp: 881250949
            }
        );
        let p = parse(f, "user,item,ts,w\n1,2,10,2.5\n1,3\n", Format::Csv).unwrap();
        assert_eq!(p.records[0].weight, 2.5);
        assert_eq!(p.records[1].timestamp, 0);
    }

    #[test]
    fn duplicates_and_unknown_items_are_counted_not_silently_dropped() {
        let f = Path::new("t");
        let mut ids = IdMap::default();
        let train = parse(f, "1 10 11 10\n2 11\n", Format::Lists).unwrap();
        let (x, r, _) = map_records("train", &train, &mut ids, true);
        assert_eq!((x.len(), r.duplicates, r.records), (3, 1, 4));
        let test = parse(f, "1 12 11 12\n3 10 14\n", Format::Lists).unwrap();
        let (x, r, unknown) = map_records("test", &test, &mut ids, false);
        assert_eq!((x.len(), r.unknown_items, r.cold_users), (2, 3, 1));
        assert_eq!(ids.user_ids, vec![1, 2, 3]);
        // the unknown pairs come back, distinct, for the caller to count as misses:
        assert_eq!(unknown, vec![(0, 12), (2, 14)]);
        let relabelled = unknown_as_interactions(&unknown, 2);
        assert_eq!(
            relabelled
                .iter()
                .map(|x| (x.user, x.item))
                .collect::<Vec<_>>(),
            vec![(0, 2), (2, 3)]
        );
    }
}
