//! Hybrid: a weighted blend of other models' per-user normalised scores.
//!
//! Each component's scores for the query are min-max normalised to `[0, 1]` over the
//! items not in the history (so seen items, which the caller usually masks, do not set
//! the scale), multiplied by the component's weight and summed. Components are shared
//! (`Arc`), so tuning blends of already-trained models costs no retraining.

use std::sync::Arc;

use super::{rank, Scorer};
use crate::model::{Because, ItemIdx};

pub struct Hybrid {
    parts: Vec<(Arc<dyn Scorer>, f32)>,
    n_items: usize,
}

impl Hybrid {
    /// Components with zero or negative weight are dropped; components are ordered by
    /// weight, heaviest first (it explains the recommendation).
    pub fn new(parts: Vec<(Arc<dyn Scorer>, f32)>) -> Hybrid {
        let n_items = parts.iter().map(|(s, _)| s.n_items()).max().unwrap_or(0);
        let mut parts: Vec<_> = parts.into_iter().filter(|(_, w)| *w > 0.0).collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        Hybrid { parts, n_items }
    }

    pub fn parts(&self) -> &[(Arc<dyn Scorer>, f32)] {
        &self.parts
    }
}

impl Scorer for Hybrid {
    fn name(&self) -> String {
        // Path- and URL-safe (`[a-z0-9.-]`): weight, then the part's own name.
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(s, w)| format!("{}{}", (w * 100.0).round() / 100.0, s.name()))
            .collect();
        format!("hybrid-{}", parts.join("-"))
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    fn score(&self, history: &[(ItemIdx, f32)], region: Option<&str>, out: &mut [f32]) {
        for (part, weight) in &self.parts {
            rank::with_buffer(out.len(), |s| {
                part.score(history, region, s);
                rank::mask(s, history.iter().map(|(i, _)| *i));
                let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                for &v in s.iter().filter(|v| v.is_finite()) {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                if hi > lo {
                    let scale = weight / (hi - lo);
                    for (o, v) in out.iter_mut().zip(s.iter()) {
                        if v.is_finite() {
                            *o += (v - lo) * scale;
                        }
                    }
                }
            });
        }
    }

    fn heap_bytes(&self) -> usize {
        self.parts.iter().map(|(s, _)| s.heap_bytes()).sum()
    }

    fn because(&self, history: &[(ItemIdx, f32)], region: Option<&str>, item: ItemIdx) -> Because {
        self.parts
            .iter()
            .map(|(p, _)| p.because(history, region, item))
            .find(|b| *b != Because::Popular)
            .unwrap_or(Because::Blend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<f32>);
    impl Scorer for Fixed {
        fn name(&self) -> String {
            "fixed".into()
        }
        fn n_items(&self) -> usize {
            self.0.len()
        }
        fn score(&self, _: &[(ItemIdx, f32)], _: Option<&str>, out: &mut [f32]) {
            out.iter_mut().zip(&self.0).for_each(|(o, s)| *o += s);
        }
        fn heap_bytes(&self) -> usize {
            0
        }

        fn because(&self, _: &[(ItemIdx, f32)], _: Option<&str>, _: ItemIdx) -> Because {
            Because::Popular
        }
    }

    #[test]
    fn blends_min_max_normalised_scores_ignoring_the_history() {
        let a: Arc<dyn Scorer> = Arc::new(Fixed(vec![100.0, 0.0, 10.0, 20.0]));
        let b: Arc<dyn Scorer> = Arc::new(Fixed(vec![0.0, 1.0, 0.5, 0.0]));
        let h = Hybrid::new(vec![(a, 0.5), (b, 0.5)]);
        let mut out = vec![0.0; 4];
        h.score(&[(0, 1.0)], None, &mut out);
        // a over items 1..4 = [0,10,20] → [0, .5, 1]; b = [1, .5, 0] → [1, .5, 0];
        // 0.5·a + 0.5·b = [0.5, 0.5, 0.5]; item 0 (history) gets nothing.
        assert_eq!(out, vec![0.0, 0.5, 0.5, 0.5]);
        assert_eq!(h.because(&[], None, 1), Because::Blend);
        assert_eq!(h.name(), "hybrid-0.5fixed-0.5fixed");
    }
}
