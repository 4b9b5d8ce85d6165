//! Content-based: TF-IDF over item text, cosine to the user's profile.
//!
//! Terms are lower-cased alphanumeric words of the title and the description (the
//! catalogue's, `origin import-items` or `PUT /v1/items/{id}`), plus `c:<category>` and
//! `t:<tag>` whole-value terms. Weights are `(1 + ln tf) · (ln((1 + I) / (1 + df)) + 1)`,
//! item vectors are L2-normalised. A user's profile is `Σ_h w_h · v_h`; item `i` scores
//! `profile · v_i / ‖profile‖` (cosine), computed through the term→items postings. Items
//! nobody interacted with still have text, so this is the way in for new items.

use std::cell::RefCell;
use std::collections::HashMap;

use super::itemknn::best_contributor;
use super::{rank, Csr, Scorer};
use crate::model::{Because, ItemIdx, ItemText, TrainingData};

thread_local! {
    static TOUCHED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

pub struct Content {
    /// Items × terms, rows L2-normalised.
    items: Csr,
    /// Terms × items.
    postings: Csr,
}

/// The words of a text: lower-cased runs of at least two alphanumeric characters.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
}

/// The terms of one item's text, with repeats: the words of its title and of its
/// description (the same terms, so a word in either matches), then its categories and
/// tags.
pub fn terms(text: &ItemText) -> Vec<String> {
    let mut out: Vec<String> = words(&text.title).chain(words(&text.description)).collect();
    out.extend(
        text.categories
            .iter()
            .map(|c| format!("c:{}", c.trim().to_lowercase())),
    );
    out.extend(
        text.tags
            .iter()
            .map(|t| format!("t:{}", t.trim().to_lowercase())),
    );
    out
}

impl Content {
    /// `None` when the data has no item text at all.
    pub fn train(data: &TrainingData) -> Option<Content> {
        if data.item_text.iter().all(|t| terms(t).is_empty()) {
            return None;
        }
        let n = data.n_items;
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut tf_rows: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
        for i in 0..n {
            let mut tf: HashMap<u32, f32> = HashMap::new();
            if let Some(text) = data.item_text.get(i) {
                for t in terms(text) {
                    let next = vocab.len() as u32;
                    *tf.entry(*vocab.entry(t).or_insert(next)).or_default() += 1.0;
                }
            }
            let mut row: Vec<(u32, f32)> = tf.into_iter().collect();
            row.sort_unstable_by_key(|p| p.0);
            tf_rows.push(row);
        }
        let mut df = vec![0f32; vocab.len()];
        for row in &tf_rows {
            for (t, _) in row {
                df[*t as usize] += 1.0;
            }
        }
        let idf: Vec<f32> = df
            .iter()
            .map(|d| ((1.0 + n as f32) / (1.0 + d)).ln() + 1.0)
            .collect();
        for row in &mut tf_rows {
            for (t, v) in row.iter_mut() {
                *v = (1.0 + v.ln()) * idf[*t as usize];
            }
            let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|(_, v)| *v /= norm);
            }
        }
        let items = Csr::from_rows(vocab.len(), tf_rows);
        let postings = items.transpose();
        Some(Content { items, postings })
    }

    /// Whether `item` has any text.
    pub fn knows(&self, item: ItemIdx) -> bool {
        (item as usize) < self.items.n_rows() && !self.items.row(item as usize).0.is_empty()
    }

    /// Cosine of two items' vectors.
    pub fn similarity(&self, a: ItemIdx, b: ItemIdx) -> f32 {
        let (ca, va) = self.items.row(a as usize);
        let (cb, vb) = self.items.row(b as usize);
        let (mut i, mut j, mut dot) = (0, 0, 0.0);
        while i < ca.len() && j < cb.len() {
            match ca[i].cmp(&cb[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += va[i] * vb[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        dot
    }
}

impl Scorer for Content {
    fn name(&self) -> String {
        "content-tfidf".into()
    }

    fn n_items(&self) -> usize {
        self.items.n_rows()
    }

    fn score(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, out: &mut [f32]) {
        rank::with_buffer(self.postings.n_rows(), |profile| {
            TOUCHED.with(|touched| {
                let mut touched = touched.borrow_mut();
                touched.clear();
                for &(h, w) in history {
                    if (h as usize) < self.items.n_rows() {
                        for (t, v) in self.items.row_iter(h as usize) {
                            let p = &mut profile[t as usize];
                            if *p == 0.0 {
                                touched.push(t);
                            }
                            *p += w * v;
                        }
                    }
                }
                let norm = touched
                    .iter()
                    .map(|&t| profile[t as usize].powi(2))
                    .sum::<f32>()
                    .sqrt();
                if norm == 0.0 {
                    return;
                }
                for &t in touched.iter() {
                    let p = profile[t as usize] / norm;
                    for (i, v) in self.postings.row_iter(t as usize) {
                        out[i as usize] += p * v;
                    }
                }
            });
        });
    }

    fn heap_bytes(&self) -> usize {
        self.items.heap_bytes() + self.postings.heap_bytes()
    }

    fn because(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, item: ItemIdx) -> Because {
        best_contributor(history, |h| {
            ((h as usize) < self.items.n_rows() && (item as usize) < self.items.n_rows())
                .then(|| self.similarity(h, item))
        })
        .map_or(Because::Popular, Because::ContentLike)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(title: &str, cats: &[&str]) -> ItemText {
        ItemText {
            title: title.into(),
            categories: cats.iter().map(|c| c.to_string()).collect(),
            tags: vec![],
            description: String::new(),
        }
    }

    #[test]
    fn items_sharing_rare_terms_rank_first_and_cold_items_get_scores() {
        let data = TrainingData {
            n_users: 0,
            n_items: 3,
            interactions: vec![],
            item_text: vec![
                text("Star Wars (1977)", &["Sci-Fi", "Action"]),
                text("Return of the Jedi (1983)", &["Sci-Fi", "Action"]),
                text("Toy Story (1995)", &["Animation"]),
            ],
            user_region: vec![],
            user_weight: Vec::new(),
        };
        let m = Content::train(&data).unwrap();
        assert_eq!(
            terms(&data.item_text[0]),
            vec!["star", "wars", "1977", "c:sci-fi", "c:action"]
        );
        let mut out = vec![0.0; 3];
        m.score(&[(0, 1.0)], None, &mut out);
        // item 0 against itself: cosine 1.
        assert!((out[0] - 1.0).abs() < 1e-5);
        assert!(out[1] > 0.0 && out[2] == 0.0);
        assert_eq!(m.because(&[(0, 1.0)], None, 1), Because::ContentLike(0));
        assert!(Content::train(&TrainingData::default()).is_none());
    }

    #[test]
    fn words_of_the_description_link_items_whose_titles_share_none() {
        let described = |title: &str, description: &str| ItemText {
            description: description.into(),
            ..text(title, &[])
        };
        let data = TrainingData {
            n_users: 0,
            n_items: 3,
            interactions: vec![],
            item_text: vec![
                described("Lantern", "A brass lantern for camping trips"),
                described("Tent", "Two-person tent for camping"),
                described("Teapot", "Porcelain, for green tea"),
            ],
            user_region: vec![],
            user_weight: Vec::new(),
        };
        assert_eq!(
            terms(&data.item_text[1]),
            vec!["tent", "two", "person", "tent", "for", "camping"]
        );
        let m = Content::train(&data).unwrap();
        let mut out = vec![0.0; 3];
        m.score(&[(0, 1.0)], None, &mut out);
        assert!(
            out[1] > out[2],
            "camping links the lantern to the tent: {out:?}"
        );
    }
}
