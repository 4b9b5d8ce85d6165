#!/usr/bin/env python3
"""Reference recommenders on the same split as `origin eval`, for bench/engine.sh.

Models: numpy/scipy EASE, item-kNN, RP3beta and GF-CF (written out here, following Steck
2019, the usual cosine-with-shrinkage kNN, Paudel et al. 2017 and Shen et al. 2021 with
scipy's sparse SVD), and the `implicit` library's ALS (conjugate gradient, confidence
1 + alpha, as ours), BPR and item-kNN.

Protocol (identical to `origin eval`): train on --train only; tune the main
hyperparameter on --valid (same grid style as ours); rank all items for every user with
>=1 test item, training items masked; top-K. The top-K lists are written to --out in
`lists` format (`user item item ...`, best first) so `origin eval --score-lists` scores
them with the Rust metric code; the metrics are also computed here with the same
formulas as a cross-check.

Prints one JSON object: model, params, train_seconds, topk_seconds (train + all-user
top-K at the chosen setting, measured once after tuning), and python-side metrics.
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import scipy.sparse as sp


def read_lists(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                out.append((int(parts[0]), [int(x) for x in parts[1:]]))
    return out


def read_item_ids(path):
    ids = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.strip():
                ids.append(int(line.split("|", 1)[0]))
    return ids


class Data:
    def __init__(self, train, items_file=None):
        self.uid, self.iid = {}, {}
        if items_file:
            for e in read_item_ids(items_file):
                self.iid.setdefault(e, len(self.iid))
        rows, cols = [], []
        for u, items in train:
            ui = self.uid.setdefault(u, len(self.uid))
            for i in items:
                rows.append(ui)
                cols.append(self.iid.setdefault(i, len(self.iid)))
        self.n_users, self.n_items = len(self.uid), len(self.iid)
        x = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(self.n_users, self.n_items)
        )
        x.sum_duplicates()
        x.data[:] = 1.0
        self.x = x
        self.user_ext = np.array(sorted(self.uid, key=self.uid.get))
        self.item_ext = np.array(sorted(self.iid, key=self.iid.get))

    def truth(self, lists):
        """{user index: sorted distinct held-out items not in training}; unknown ids dropped."""
        out = {}
        for u, items in lists:
            if u not in self.uid:
                continue
            ui = self.uid[u]
            seen = set(self.x.indices[self.x.indptr[ui] : self.x.indptr[ui + 1]])
            rel = sorted({self.iid[i] for i in items if i in self.iid} - seen)
            if rel:
                out[ui] = rel
        return out


def metrics(ranked, truth, k, n_items):
    """Same formulas as origin/src/eval/metrics.rs."""
    p = r = n = m = 0.0
    shown = set()
    for u, rel in truth.items():
        rel = set(rel)
        lst = list(ranked.get(u, []))[:k]
        shown.update(lst)
        hits = dcg = ap = 0.0
        for pos, i in enumerate(lst):
            if i in rel:
                hits += 1
                dcg += 1 / math.log2(pos + 2)
                ap += hits / (pos + 1)
        ideal = min(k, len(rel))
        idcg = sum(1 / math.log2(q + 2) for q in range(ideal))
        p += hits / k
        r += hits / len(rel)
        n += dcg / idcg
        m += ap / ideal
    c = max(len(truth), 1)
    return {f"recall@{k}": r / c, f"ndcg@{k}": n / c, f"precision@{k}": p / c, f"map@{k}": m / c,
            "coverage": len(shown) / n_items, "users": len(truth)}


def topk_dense(scores, x_rows, k):
    """Top-k of dense score rows with the users' training items masked."""
    scores = np.asarray(scores, dtype=np.float32)
    scores[x_rows.nonzero()] = -np.inf
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, 1)


# ---- models: fit(data, param) -> recommend(users ndarray, k) -> 2-D item array --------

def ease_numpy(d, lam):
    g = (d.x.T @ d.x).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    b = b.astype(np.float32)
    return lambda users, k: topk_dense(d.x[users] @ b, d.x[users], k)


def itemknn_numpy(d, kk, shrink=10.0):
    xt = d.x.T.tocsr()
    s = (xt @ d.x).toarray().astype(np.float32)
    norms = np.sqrt(np.asarray(d.x.multiply(d.x).sum(axis=0)).ravel())
    s /= np.outer(norms, norms) + shrink
    np.fill_diagonal(s, 0.0)
    if kk < s.shape[0]:
        # keep the kk largest per row (item i's neighbours), as a sparse matrix
        idx = np.argpartition(-s, kk, axis=1)[:, :kk]
        rows = np.repeat(np.arange(s.shape[0]), kk)
        s = sp.csr_matrix((s[rows, idx.ravel()], (rows, idx.ravel())), shape=s.shape)
    else:
        s = sp.csr_matrix(s)
    return lambda users, k: topk_dense((d.x[users] @ s).toarray(), d.x[users], k)


def rp3beta_numpy(d, beta, alpha=0.8, kk=100):
    """RP3beta: W = D_i^-a X^T D_u^-a X D_i^-b (zero diagonal), top-kk per row."""
    du = np.asarray(d.x.sum(axis=1)).ravel()
    di = np.asarray(d.x.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        pu = np.where(du > 0, du ** -alpha, 0.0)
        pa = np.where(di > 0, di ** -alpha, 0.0)
        pb = np.where(di > 0, di ** -beta, 0.0)
    g = (d.x.T @ sp.diags(pu) @ d.x).toarray()
    w = (pa[:, None] * g * pb[None, :]).astype(np.float32)
    np.fill_diagonal(w, 0.0)
    if kk < w.shape[0]:
        idx = np.argpartition(-w, kk, axis=1)[:, kk:]
        np.put_along_axis(w, idx, 0.0, axis=1)
    return lambda users, k: topk_dense(d.x[users] @ w, d.x[users], k)


def gfcf_numpy(d, alpha, rank=256):
    """GF-CF: R~ = D_u^-1/2 R D_i^-1/2; scores r (R~^T R~) + alpha r D_i^-1/2 V V^T D_i^1/2."""
    from scipy.sparse.linalg import svds
    du = np.asarray(d.x.sum(axis=1)).ravel()
    di = np.asarray(d.x.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        iu = np.where(du > 0, du ** -0.5, 0.0)
        ii = np.where(di > 0, di ** -0.5, 0.0)
    r = sp.diags(iu) @ d.x @ sp.diags(ii)
    p = (r.T @ r).toarray().astype(np.float32)
    rank = min(rank, min(r.shape) - 1)
    _, _, vt = svds(r.astype(np.float64), k=rank, random_state=42)
    lp = (ii[:, None] * (vt.T @ vt)) * np.where(ii > 0, 1.0 / np.where(ii > 0, ii, 1.0), 0.0)[None, :]
    w = (p + alpha * lp).astype(np.float32)
    return lambda users, k: topk_dense(d.x[users] @ w, d.x[users], k)


def implicit_model(model, confidence=None):
    def fit(d, param):
        m = model(param)
        # `implicit` reads the matrix as confidences; ALS gets 1 + alpha·x like ours.
        x = d.x if confidence is None else (d.x * confidence).tocsr()
        if confidence is not None:
            x.data += 1.0
        m.fit(x, show_progress=False)

        def rec(users, k):
            ids, _ = m.recommend(users, d.x[users], N=k, filter_already_liked_items=True)
            return ids
        return rec
    return fit


ALS_ALPHA, ALS_REG = 3.0, 30.0  # the setting our ALS grid finds best on ML-100K validation


def als(factors):
    from implicit.cpu.als import AlternatingLeastSquares
    return AlternatingLeastSquares(factors=factors, regularization=ALS_REG, iterations=15,
                                   use_cg=True, num_threads=2, random_state=42)


def bpr(factors):
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    return BayesianPersonalizedRanking(factors=factors, learning_rate=0.01, regularization=0.01,
                                       iterations=100, num_threads=2, random_state=42)


def iknn(kk):
    from implicit.nearest_neighbours import CosineRecommender
    return CosineRecommender(K=kk, num_threads=2)


MODELS = {
    "ease-numpy": (ease_numpy, [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0], "lambda"),
    "itemknn-numpy": (itemknn_numpy, [50, 100, 200, 400], "k"),
    "rp3beta-numpy": (rp3beta_numpy, [0.35, 0.5, 0.6], "beta"),
    "gfcf-numpy": (gfcf_numpy, [0.1, 0.3, 0.6], "alpha"),
    "implicit-als": (implicit_model(als, ALS_ALPHA), [16, 32, 64, 128], "factors"),
    "implicit-bpr": (implicit_model(bpr), [32, 64, 128], "factors"),
    "implicit-itemknn": (implicit_model(iknn), [50, 100, 200, 400], "k"),
}


def run(d, fit, param, truth, k):
    users = np.array(sorted(truth), dtype=np.int64)
    t0 = time.perf_counter()
    rec = fit(d, param)
    t1 = time.perf_counter()
    ids = rec(users, k)
    t2 = time.perf_counter()
    ranked = {int(u): [int(i) for i in row if i >= 0] for u, row in zip(users, ids)}
    return ranked, t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid")
    ap.add_argument("--test", required=True)
    ap.add_argument("--items", help="MovieLens u.item: the item catalogue, as `origin eval --items`")
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--param", type=float, help="skip tuning and use this value")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", required=True, help="write the test top-K lists here")
    a = ap.parse_args()

    d = Data(read_lists(a.train), a.items)
    fit, grid, pname = MODELS[a.model]
    cast = int if pname in ("k", "factors") else float
    trials = []
    if a.param is not None:
        best = cast(a.param)
    elif a.valid:
        vt = d.truth(read_lists(a.valid))
        for p in grid:
            ranked, _, _ = run(d, fit, p, vt, a.k)
            score = metrics(ranked, vt, a.k, d.n_items)[f"ndcg@{a.k}"]
            trials.append({pname: p, f"valid_ndcg@{a.k}": score})
            print(f"peers: {a.model} {pname}={p} valid ndcg@{a.k} {score:.4f}", file=sys.stderr)
        best = max(trials, key=lambda t: t[f"valid_ndcg@{a.k}"])[pname]
    else:
        best = grid[len(grid) // 2]
    tt = d.truth(read_lists(a.test))
    ranked, train_s, topk_s = run(d, fit, best, tt, a.k)
    with open(a.out, "w") as f:
        for u in sorted(ranked):
            f.write(" ".join(str(v) for v in [d.user_ext[u], *d.item_ext[ranked[u]]]) + "\n")
    out = {"model": a.model, "params": {pname: best}, "train_seconds": train_s, "topk_seconds": topk_s,
           "seconds": train_s + topk_s, "python_metrics": metrics(ranked, tt, a.k, d.n_items),
           "tuning": trials}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
