"""Issue 15: measure ORACLE retrains and CARA-P phi* vs kappa under alternative Psi-bar unit conventions.

One process, RF (the paper's model for Tables 2-4 / Figs 3-7), models trained ONCE per (stream, seed);
every convention only changes the kernel geometry or a normalisation, so the RF predictions are reused
(an RF is invariant to a per-feature affine rescaling of X, so "standardised features" needs no retrain).

Usage: ../../.venv/bin/python units.py covcon-d 0   (writes benchmarks/units_study/out/<stream>-seed<N>.json)
       extra: covcon-d with alpha override:  ... covcon-d 0 --alpha 1.0
"""
from __future__ import annotations

import os

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository's root
import cara_mlflow.streams.synthetic as SYN  # noqa: E402
from cara_mlflow import simulate as S  # noqa: E402
from cara_mlflow.costs import StalenessTerms, predict_later, staleness_terms  # noqa: E402
from cara_mlflow.staleness import resolve_gamma, stack_rows  # noqa: E402
from cara_mlflow.streams import make_stream  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DATA = {"electricity": "/work/shared/data/elec2.csv.gz"}
N_OFF = 25
KAPPAS = np.geomspace(1e-3, 1e4, 71)   # 10 per decade, absolute kappa
POLICIES = ["oracle", "cara-p", "cara-t", "cara-ct", "markov", "nr"]


def train(stream_name, seed, alpha=None):
    if alpha is not None:
        SYN.COVCON_ALPHA = alpha
    extra = {"data": DATA[stream_name]} if stream_name in DATA else {}
    batches = list(make_stream(stream_name, seed=seed, **extra))
    clock = time.perf_counter()
    models = [S.make_model("rf", b.X, b.y, seed) for b in batches]
    t_train = time.perf_counter() - clock
    wins = {"offline": batches[:N_OFF], "online": batches[N_OFF:]}
    mods = {"offline": models[:N_OFF], "online": models[N_OFF:]}
    preds, qhits, errors = {}, None, None
    for key, window in wins.items():
        online = key == "online"
        extra_q = [b.queries if (online and b.query_index is None) else b.X[:0] for b in window]
        p = predict_later(mods[key], [stack_rows([b.X, q]) for b, q in zip(window, extra_q)])
        n = [b.X.shape[0] for b in window]
        preds[key] = [[pp[:n[tp + k]] for k, pp in enumerate(row)] for tp, row in enumerate(p)]
        if online:
            qhits = [[(pp[n[tp + k]:] if b.query_index is None else pp[b.query_index]) == b.query_labels
                      for k, (pp, b) in enumerate(zip(row, window[tp:]))] for tp, row in enumerate(p)]
            errors = [[(pp != b.y).astype(np.int8) for pp, b in zip(row, window[tp:])]
                      for tp, row in enumerate(preds[key])]
    return batches, wins, preds, qhits, errors, t_train


def gammas(Xoff: np.ndarray) -> dict:
    """Candidate readings of 'gamma is the inverse of the variance ... based on the number of features d'."""
    d = Xoff.shape[1]
    var_all = float(Xoff.var())                 # variance of all entries pooled (sklearn 'scale')
    var_sum = float(Xoff.var(axis=0).sum())     # trace of the covariance
    rng = np.random.default_rng(0)
    idx = rng.choice(len(Xoff), min(1000, len(Xoff)), replace=False)
    A = Xoff[idx]
    sq = ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
    med = float(np.median(sq[np.triu_indices(len(A), 1)]))
    return {
        "scale=1/(d*Var_pooled) [ours]": 1.0 / (d * var_all),
        "1/Var_pooled (no d)": 1.0 / var_all,
        "1/d (sklearn auto)": 1.0 / d,
        "1/trace(Cov)": 1.0 / var_sum,
        "1/median(||x-x'||^2)": 1.0 / med,
        "1/(2*median) (sigma^2=median/2... RBF 1/(2s^2))": 1.0 / (2 * med),
        "gamma=1": 1.0,
        "K=1 everywhere (gamma->0): upper bound": 1e-12,
    }


def terms_for(wins, preds, g, transform=None):
    out = {}
    for key, window in wins.items():
        tx = (lambda A: A) if transform is None else transform
        out[key] = staleness_terms([(tx(b.X), b.y) for b in window], queries=[tx(b.queries) for b in window],
                                   predictions=preds[key], gamma=g, method="exact")
    return out


def rescale(terms: StalenessTerms, col_factor: np.ndarray) -> StalenessTerms:
    f = np.asarray(col_factor)[None, :]
    return StalenessTerms(psi_now=terms.psi_now * f, psi_then=terms.psi_then * f, gamma=terms.gamma)


def sweep(name, stream_name, seed, wins, T, tm, qhits, errors):
    prep = S.Prepared(stream=stream_name, seed=seed, model="rf", gamma=tm["offline"].gamma, n_offline=N_OFF,
                      n_batches=T, offline_terms=tm["offline"], online_terms=tm["online"], errors=errors,
                      query_hits=qhits)
    pb = tm["offline"].psi_bar
    off_mean = float(pb[np.triu_indices_from(pb, 1)].mean())
    pbo = tm["online"].psi_bar
    on_mean = float(pbo[np.triu_indices_from(pbo, 1)].mean())
    adj_off = float(np.nanmean(np.diag(pb, 1)))
    rows = []
    for k in KAPPAS:
        rep = S.evaluate(prep, kappa=float(k), policies=POLICIES)
        row = {"kappa": float(k)}
        for r in rep.results:
            row[r.policy] = r.n_retrains
            row["scpe_" + r.policy] = r.scpe
            if r.policy == "cara-p":
                row["phi"], row["offset"] = int(r.params["phi"]), int(r.params.get("offset", 0))
            if r.policy == "oracle":
                row["oracle_cost"] = r.strategy_cost
                row["oracle_acc"] = r.query_accuracy
        rows.append(row)
    return {"convention": name, "gamma": tm["offline"].gamma, "psi_off_mean": off_mean, "psi_on_mean": on_mean,
            "psi_off_adjacent_mean": adj_off, "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stream")
    ap.add_argument("seed", type=int)
    ap.add_argument("--alpha", type=float, default=None)
    a = ap.parse_args()
    clock = time.perf_counter()
    batches, wins, preds, qhits, errors, t_train = train(a.stream, a.seed, a.alpha)
    T = len(batches)
    Xoff = np.concatenate([b.X for b in batches[:N_OFF]])
    nQ = {k: np.array([b.queries.shape[0] for b in w], float) for k, w in wins.items()}
    nD = {k: np.array([b.X.shape[0] for b in w], float) for k, w in wins.items()}
    results = []
    gs = gammas(Xoff)
    base = None
    for gname, g in gs.items():
        tm = terms_for(wins, preds, g)
        if base is None:
            base = tm
        results.append(sweep(gname, a.stream, a.seed, wins, T, tm, qhits, errors))
        print(f"{gname}: gamma={g:.4g} psi_off={results[-1]['psi_off_mean']:.4g}", flush=True)
    # Normalisation variants on our gamma
    tm = {k: rescale(base[k], 1.0 / nQ[k]) for k in base}
    results.append(sweep("ours, Psi MEAN over queries (1/|Q|)", a.stream, a.seed, wins, T, tm, qhits, errors))
    tm = {k: rescale(base[k], nD[k]) for k in base}
    results.append(sweep("ours, no 1/|D| (sum over D)", a.stream, a.seed, wins, T, tm, qhits, errors))
    tm = {k: rescale(base[k], nD[k] / nQ[k]) for k in base}
    results.append(sweep("ours, mean over Q and no 1/|D|", a.stream, a.seed, wins, T, tm, qhits, errors))
    # gamma='scale' resolved on the whole stream instead of the offline window
    Xall = np.concatenate([b.X for b in batches])
    tm = terms_for(wins, preds, resolve_gamma("scale", Xall))
    results.append(sweep("scale on ALL batches (not offline only)", a.stream, a.seed, wins, T, tm, qhits, errors))
    # Preprocessing variant: per-feature z-score with the WHOLE stream's mean and sd (RF predictions unchanged).
    # (Not the offline window's: 3 ELECTRICITY features are constant offline, sd ~1e-14, which would explode.)
    mu, sd = Xall.mean(0), Xall.std(0)
    sd[sd < 1e-12] = 1

    def z(A):
        return (A - mu) / sd

    Zoff = z(Xoff)
    for gname, g in {"z-scored X, gamma=scale(=1/d)": resolve_gamma("scale", Zoff),
                     "z-scored X, gamma=1": 1.0}.items():
        tm = terms_for(wins, preds, g, transform=z)
        results.append(sweep(gname, a.stream, a.seed, wins, T, tm, qhits, errors))
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"{a.stream}-seed{a.seed}" + (f"-alpha{a.alpha:g}" if a.alpha is not None else "")
    doc = {"stream": a.stream, "seed": a.seed, "alpha": a.alpha, "t_train": t_train,
           "n_queries": float(nQ["offline"].mean()), "n_data": float(nD["offline"].mean()),
           "seconds": time.perf_counter() - clock, "results": results}
    (OUT / f"{tag}.json").write_text(json.dumps(doc, indent=1))
    print(f"done {tag} in {doc['seconds']:.0f} s")


if __name__ == "__main__":
    main()
