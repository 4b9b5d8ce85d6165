//! `origin import-items FILE`: loading a catalogue from a CSV file with a header or from
//! JSON Lines, with the rules of the API ([`super::validate_item`]).
//!
//! - CSV (`.csv`, or `--format csv`): a header line naming the columns, read by the
//!   `csv` crate (quoted fields, any `--delimiter`). Without `--columns` every column
//!   must be a field's name (`item_id`, `title`, `description`, `categories`, `tags`,
//!   `price`, `currency`, `available`, `created_at`, `attributes`), so a misspelt one
//!   fails instead of being dropped; with `--columns item_id=sku,title=name,…` only the
//!   columns named are read, others ignored. Lists (`categories`, `tags`) are
//!   `|`-separated; `attributes` is a JSON object; `available` is
//!   `true/false/yes/no/1/0`; an empty cell leaves the field to its default.
//! - JSON Lines (`.jsonl`, `.ndjson`, or `--format jsonl`): one item per line, as the
//!   body of `PUT /v1/items/{id}` plus its `item_id`; strict JSON (no duplicate keys, no
//!   unknown fields).
//!
//! As `origin import`: the whole file is parsed and validated before anything is
//! written; the first bad line fails it with `FILE:LINE: field: what is wrong`, and
//! nothing is stored. The items are then written in one transaction
//! ([`Store::upsert_items`]). An id may appear once per file.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

use super::{read_document, validate_item, ItemInput};
use crate::store::{ItemRow, Store, StoreError};

/// Input formats of `origin import-items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ItemFileFormat {
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl ItemFileFormat {
    /// The format a file's extension names (`.csv`; `.jsonl`, `.ndjson`).
    pub fn from_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(ItemFileFormat::Csv),
            "jsonl" | "ndjson" => Some(ItemFileFormat::Jsonl),
            _ => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum ItemImportError {
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
    #[error("{0}: say which format with --format csv or --format jsonl (the extension does not: .csv, .jsonl, .ndjson)")]
    UnknownFormat(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The fields a CSV column may hold.
const FIELDS: [&str; 10] = [
    "item_id",
    "title",
    "description",
    "categories",
    "tags",
    "price",
    "currency",
    "available",
    "created_at",
    "attributes",
];

/// Which CSV header column holds each field (`--columns field=COLUMN,…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemColumns(Vec<(&'static str, String)>);

impl ItemColumns {
    /// Parses `item_id=COL[,title=COL]…`; `item_id` is required.
    pub fn parse(spec: &str) -> Result<Self, ItemImportError> {
        let bad = |what: String| ItemImportError::Columns(what);
        let mut map: Vec<(&'static str, String)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, column) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not FIELD=COLUMN")))?;
            let column = column.trim();
            if column.is_empty() || column.len() > 200 {
                return Err(bad(format!("{field}: a column name of 1 to 200 bytes")));
            }
            let field = FIELDS.iter().find(|f| **f == field.trim()).ok_or_else(|| {
                bad(format!(
                    "unknown field {:?}: use {}",
                    field.trim(),
                    FIELDS.join(", ")
                ))
            })?;
            if map.iter().any(|(f, _)| f == field) {
                return Err(bad(format!("{field} is mapped twice")));
            }
            map.push((field, column.to_owned()));
        }
        if !map.iter().any(|(f, _)| *f == "item_id") {
            return Err(bad("item_id=COLUMN is required".into()));
        }
        Ok(ItemColumns(map))
    }
}

/// How to read the file.
#[derive(Debug, Clone)]
pub struct ItemImportOptions {
    /// `None`: by the file's extension.
    pub format: Option<ItemFileFormat>,
    /// CSV only: columns by header name.
    pub columns: Option<ItemColumns>,
    /// CSV only: the field delimiter.
    pub delimiter: u8,
}

impl Default for ItemImportOptions {
    fn default() -> Self {
        ItemImportOptions {
            format: None,
            columns: None,
            delimiter: b',',
        }
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemImportSummary {
    /// Items created or replaced.
    pub items: u64,
    /// Of those, items the store did not hold before.
    pub new_items: u64,
}

fn read_text(path: &Path) -> Result<String, ItemImportError> {
    std::fs::read_to_string(path).map_err(|source| ItemImportError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// One CSV cell's field into `input`; an empty cell leaves the field unset.
fn set_field(input: &mut ItemInput, field: &str, raw: &str) -> Result<(), String> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(());
    }
    let list = |v: &str| -> Vec<String> {
        v.split('|')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match field {
        "item_id" => input.item_id = Some(value.to_owned()),
        // Text keeps its own spacing.
        "title" => input.title = raw.to_owned(),
        "description" => input.description = raw.to_owned(),
        "categories" => input.categories = list(value),
        "tags" => input.tags = list(value),
        "price" => {
            input.price = Some(
                value
                    .parse()
                    .map_err(|_| format!("price: {value:?} is not a number"))?,
            )
        }
        "currency" => input.currency = Some(value.to_owned()),
        "available" => {
            input.available = Some(match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => {
                    return Err(format!(
                        "available: {value:?} is not true, false, yes, no, 1 or 0"
                    ))
                }
            })
        }
        "created_at" => {
            input.created_at = Some(value.parse().map_err(|_| {
                format!("created_at: {value:?} is not a whole number of unix seconds")
            })?)
        }
        "attributes" => {
            contract::json::check_no_duplicate_keys(value.as_bytes())
                .map_err(|e| format!("attributes: {e}"))?;
            input.attributes = Some(
                serde_json::from_str(value)
                    .map_err(|e| format!("attributes: not a JSON object: {e}"))?,
            );
        }
        // The header is checked against `FIELDS`; nothing else reaches here.
        other => return Err(format!("{other}: not a field of an item")),
    }
    Ok(())
}

fn parse_csv(
    path: &Path,
    options: &ItemImportOptions,
    now: i64,
) -> Result<Vec<(usize, ItemRow)>, ItemImportError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let at = |line: usize, what: String| ItemImportError::Line {
        file: file.clone(),
        line,
        what,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .from_reader(text.as_bytes());
    // (column index, field) of every column read, once the header is seen.
    let mut columns: Option<Vec<(usize, &'static str)>> = None;
    let mut rows = Vec::new();
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
        let Some(cols) = &columns else {
            columns =
                Some(header_columns(&fields, options.columns.as_ref()).map_err(|w| at(line, w))?);
            continue;
        };
        let mut input = ItemInput::default();
        for &(k, field) in cols {
            let raw = fields.get(k).copied().unwrap_or("");
            set_field(&mut input, field, raw).map_err(|w| at(line, w))?;
        }
        let row = validate_item(input, None, now).map_err(|e| at(line, e.to_string()))?;
        rows.push((line, row));
    }
    if columns.is_none() {
        return Err(at(1, "the file has no header line".into()));
    }
    Ok(rows)
}

/// The columns a header names: every column by its field name, or the mapped ones.
fn header_columns(
    header: &[&str],
    map: Option<&ItemColumns>,
) -> Result<Vec<(usize, &'static str)>, String> {
    let found = || -> Vec<&str> { header.iter().map(|f| f.trim()).take(20).collect() };
    let mut columns = Vec::new();
    match map {
        Some(ItemColumns(map)) => {
            for (field, name) in map {
                let k = header
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        format!("no column {name:?} in the header (found {:?})", found())
                    })?;
                columns.push((k, *field));
            }
        }
        None => {
            for (k, h) in header.iter().enumerate() {
                let name = h.trim().to_ascii_lowercase();
                let field = FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
                    format!(
                        "column {:?} is not a field of an item ({}); map other names with \
                         --columns item_id=COL,title=COL,…",
                        h.trim(),
                        FIELDS.join(", ")
                    )
                })?;
                if columns.iter().any(|(_, f)| f == field) {
                    return Err(format!("column {field:?} appears twice in the header"));
                }
                columns.push((k, *field));
            }
            if !columns.iter().any(|(_, f)| *f == "item_id") {
                return Err(format!(
                    "the header has no item_id column (found {:?})",
                    found()
                ));
            }
        }
    }
    Ok(columns)
}

fn parse_jsonl(path: &Path, now: i64) -> Result<Vec<(usize, ItemRow)>, ItemImportError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| ItemImportError::Line {
            file: file.clone(),
            line: i + 1,
            what,
        };
        contract::json::check_no_duplicate_keys(line.as_bytes())
            .map_err(|e| at(format!("not valid JSON: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        let input: ItemInput =
            read_document(value, "invalid_item").map_err(|e| at(e.to_string()))?;
        let row = validate_item(input, None, now).map_err(|e| at(e.to_string()))?;
        rows.push((i + 1, row));
    }
    Ok(rows)
}

/// Parses and validates a whole file (as of `now`, the default `created_at`): its
/// items, in order; an id given twice fails on its second line.
pub fn parse_file(
    path: &Path,
    options: &ItemImportOptions,
    now: i64,
) -> Result<Vec<ItemRow>, ItemImportError> {
    let format = options
        .format
        .or_else(|| ItemFileFormat::from_extension(path))
        .ok_or_else(|| ItemImportError::UnknownFormat(path.display().to_string()))?;
    if format == ItemFileFormat::Jsonl && options.columns.is_some() {
        return Err(ItemImportError::Columns(
            "a column mapping is for CSV files; JSON Lines name their fields".into(),
        ));
    }
    let rows = match format {
        ItemFileFormat::Csv => parse_csv(path, options, now)?,
        ItemFileFormat::Jsonl => parse_jsonl(path, now)?,
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    for (line, row) in &rows {
        if let Some(first) = seen.insert(row.item_id.as_str(), *line) {
            return Err(ItemImportError::Line {
                file: path.display().to_string(),
                line: *line,
                what: format!("item_id: {:?} is also on line {first}", row.item_id),
            });
        }
    }
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// Validates the file (on the blocking pool), then writes its items into `store` in one
/// transaction. Needs a tokio runtime.
pub async fn import_items(
    store: &dyn Store,
    options: &ItemImportOptions,
    path: &Path,
    now: i64,
) -> Result<ItemImportSummary, ItemImportError> {
    let (options, file) = (options.clone(), path.to_owned());
    let items = tokio::task::spawn_blocking(move || parse_file(&file, &options, now))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let n = items.len() as u64;
    let before = store.counts().await?.items;
    store.upsert_items(items).await?;
    let after = store.counts().await?.items;
    Ok(ItemImportSummary {
        items: n,
        new_items: after.saturating_sub(before),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use std::sync::Arc;

    const NOW: i64 = 1_764_000_000;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_csv_with_quoted_fields_lists_and_attributes_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "items.csv",
            "item_id,title,description,categories,tags,price,currency,available,created_at,attributes\n\
             i1,\"Lantern, brass\",\"Two\nlines\",outdoor|lights,,19.5,EUR,no,5,\"{\"\"colour\"\":\"\"blue\"\"}\"\n\
             \n\
             i2,Tent,,,camping,,,,,\n",
        );
        let rows = parse_file(&p, &ItemImportOptions::default(), NOW).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].title, "Lantern, brass");
        assert_eq!(rows[0].description, "Two\nlines");
        assert_eq!(rows[0].categories, ["outdoor", "lights"]);
        assert_eq!(rows[0].price, Some(19.5));
        assert!(!rows[0].available);
        assert_eq!(rows[0].created_at, 5);
        assert_eq!(rows[0].attributes["colour"], "blue");
        assert_eq!(rows[1].tags, ["camping"]);
        assert!(rows[1].available && rows[1].price.is_none());
        assert_eq!(rows[1].created_at, NOW);
    }

    #[test]
    fn columns_map_other_header_names_and_ignore_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "movies.txt",
            "movieId;genres;name;extra\n1;Comedy|Drama;Toy Story;x\n",
        );
        let options = ItemImportOptions {
            format: Some(ItemFileFormat::Csv),
            columns: Some(
                ItemColumns::parse("item_id=movieId,title=name,categories=genres").unwrap(),
            ),
            delimiter: b';',
        };
        let rows = parse_file(&p, &options, NOW).unwrap();
        assert_eq!(rows[0].item_id, "1");
        assert_eq!(rows[0].title, "Toy Story");
        assert_eq!(rows[0].categories, ["Comedy", "Drama"]);
        assert!(
            ItemColumns::parse("title=name").is_err(),
            "item_id is required"
        );
        assert!(ItemColumns::parse("item_id=a,colour=b").is_err());
    }

    #[test]
    fn a_bad_line_fails_the_file_with_its_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "a.csv",
                "item_id,title\ni1,ok\ni2,\"bell\u{7}\"\n",
                ":3: title:",
            ),
            ("b.csv", "item_id,titel\ni1,x\n", ":1: column \"titel\""),
            ("c.csv", "item_id,price\ni1,cheap\n", ":2: price:"),
            (
                "d.csv",
                "item_id,title\ni1,a\ni1,b\n",
                ":3: item_id: \"i1\" is also on line 2",
            ),
            ("e.csv", "item_id,tags\n\"i/1\",x\n", ":2: item_id:"),
            (
                "f.jsonl",
                "{\"item_id\":\"i1\"}\n{\"item_id\":\"i2\",\"price\":\"9\"}\n",
                ":2: price: invalid type",
            ),
            (
                "g.jsonl",
                "{\"item_id\":\"i1\",\"colour\":1}\n",
                ":1: colour: unknown field `colour`",
            ),
            (
                "h.jsonl",
                "{\"item_id\":\"i1\",\"title\":\"a\",\"title\":\"b\"}\n",
                ":1: not valid JSON: duplicate key",
            ),
            (
                "i.ndjson",
                "{\"title\":\"no id\"}\n",
                ":1: item_id: is required",
            ),
        ];
        for (name, text, want) in cases {
            let p = write(dir.path(), name, text);
            let e = parse_file(&p, &ItemImportOptions::default(), NOW)
                .expect_err(name)
                .to_string();
            assert!(e.contains(&format!("{name}{want}")), "{name}: {e}");
        }
        let p = write(dir.path(), "items.txt", "item_id\ni1\n");
        assert!(matches!(
            parse_file(&p, &ItemImportOptions::default(), NOW),
            Err(ItemImportError::UnknownFormat(_))
        ));
    }

    #[tokio::test]
    async fn an_import_stores_every_item_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("o.sqlite"), 10).unwrap());
        let bad = write(
            dir.path(),
            "bad.jsonl",
            "{\"item_id\":\"i1\",\"title\":\"One\"}\n{\"item_id\":\"i2\",\"price\":-1}\n",
        );
        let e = import_items(&*store, &ItemImportOptions::default(), &bad, NOW)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("bad.jsonl:2: price:"), "{e}");
        assert_eq!(
            store.counts().await.unwrap().items,
            0,
            "nothing of a bad file"
        );
        let good = write(
            dir.path(),
            "good.jsonl",
            "{\"item_id\":\"i1\",\"title\":\"One\",\"description\":\"First\"}\n\
             {\"item_id\":\"i2\",\"available\":false}\n",
        );
        let sum = import_items(&*store, &ItemImportOptions::default(), &good, NOW)
            .await
            .unwrap();
        assert_eq!(
            sum,
            ItemImportSummary {
                items: 2,
                new_items: 2
            }
        );
        let i1 = store
            .item(&contract::ItemId::parse("i1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (i1.title.as_str(), i1.description.as_str()),
            ("One", "First")
        );
    }
}
