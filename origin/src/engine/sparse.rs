//! A compressed sparse row matrix over plain `Vec`s.
//!
//! The models only need three things from a sparse matrix: iterate a row, transpose, and
//! build from triplets. A hand-rolled CSR does that in a page and keeps indices as `u32`
//! (half the memory of `usize` indices), so no sparse-matrix crate is pulled in.

/// Rows of `(column, value)` pairs, columns sorted ascending within a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csr {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
    n_cols: usize,
}

impl Csr {
    /// Builds from `(row, col, value)` triplets. Duplicate cells keep the largest value
    /// (an implicit signal repeated is still one signal).
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        triplets: impl IntoIterator<Item = (u32, u32, f32)>,
    ) -> Csr {
        let mut cells: Vec<(u32, u32, f32)> = triplets.into_iter().collect();
        cells.sort_unstable_by_key(|c| (c.0, c.1));
        let mut indptr = vec![0usize; n_rows + 1];
        let mut indices = Vec::with_capacity(cells.len());
        let mut values: Vec<f32> = Vec::with_capacity(cells.len());
        let mut last: Option<(u32, u32)> = None;
        for (r, c, v) in cells {
            debug_assert!((r as usize) < n_rows && (c as usize) < n_cols);
            if last == Some((r, c)) {
                let slot = values.last_mut().expect("a previous cell exists");
                *slot = slot.max(v);
                continue;
            }
            last = Some((r, c));
            indptr[r as usize + 1] += 1;
            indices.push(c);
            values.push(v);
        }
        for r in 0..n_rows {
            indptr[r + 1] += indptr[r];
        }
        Csr {
            indptr,
            indices,
            values,
            n_cols,
        }
    }

    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Number of stored cells.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Columns and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// Iterates row `r` as `(column, value)`.
    #[inline]
    pub fn row_iter(&self, r: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        let (c, v) = self.row(r);
        c.iter().copied().zip(v.iter().copied())
    }

    /// The value at `(r, c)`, by binary search in the row.
    pub fn get(&self, r: usize, c: u32) -> Option<f32> {
        let (cols, vals) = self.row(r);
        cols.binary_search(&c).ok().map(|i| vals[i])
    }

    /// Euclidean norm of every row.
    pub fn row_norms(&self) -> Vec<f32> {
        (0..self.n_rows())
            .map(|r| self.row(r).1.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect()
    }

    /// The transpose, also in CSR form (so the CSC view of `self`).
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for c in 0..self.n_cols {
            counts[c + 1] += counts[c];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.n_rows() {
            for (c, v) in self.row_iter(r) {
                let slot = &mut next[c as usize];
                indices[*slot] = r as u32;
                values[*slot] = v;
                *slot += 1;
            }
        }
        Csr {
            indptr: counts,
            indices,
            values,
            n_cols: self.n_rows(),
        }
    }

    /// Builds directly from rows already sorted by column.
    pub fn from_rows(n_cols: usize, rows: Vec<Vec<(u32, f32)>>) -> Csr {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let total = rows.iter().map(Vec::len).sum();
        let mut indices = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(total);
        for row in rows {
            for (c, v) in row {
                indices.push(c);
                values.push(v);
            }
            indptr.push(indices.len());
        }
        Csr {
            indptr,
            indices,
            values,
            n_cols,
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * 8 + self.indices.len() * 4 + self.values.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_largest_value_and_transpose_round_trips() {
        let m = Csr::from_triplets(2, 3, [(1, 2, 1.0), (0, 1, 2.0), (1, 2, 3.0), (1, 0, 1.0)]);
        assert_eq!(m.nnz(), 3);
        assert_eq!(m.row(1), (&[0u32, 2][..], &[1.0f32, 3.0][..]));
        let t = m.transpose();
        assert_eq!(t.n_rows(), 3);
        assert_eq!(t.get(2, 1), Some(3.0));
        assert_eq!(t.transpose(), m);
    }
}
