"""Tuning on a large history: the offline cost matrix from row samples against every model on every
later batch (issue 20, part 2; target ≤ 0.2× the exact path's prediction time, training excluded).

The stream of ``bench_scale.py`` (d = 10, Gaussian rows, a slowly turning linear boundary with 10%
label noise, 2 000 queries per batch): ``--batches`` (25) offline batches of ``--rows`` (10⁶) rows.
One 50-tree random forest of depth ≤ 12 per batch (one thread), trained on 10⁵ of its rows
(training is excluded from the comparison; a forest of depth ≤ 12 predicts at the same cost
whatever it was trained on). Data and forests are made once and cached in ``--cache``.

Each path runs in its own process (peak memory is that process's maximum resident set):

* exact: :func:`cara_mlflow.costs.predict_later` (what ``tune`` did) — timed: the prediction
  time the target refers to; then the exact first terms (every row against every query, not
  timed) as the reference for the sampled entries;
* sampled, at κ = ``--factors`` × the exact mean |Ψ̄|:
  :func:`cara_mlflow.matrix_sample.sampled_staleness_terms` with ``auto`` (tune's default),
  timed whole: its own-batch predictions, the pilot, the sampled predictions and the kernel sums
  of its groups, of the second terms and of any batch predicted whole.

Prints, per κ: the sampled path's prediction seconds / the exact path's (target ≤ 0.2), and its
whole time (with the kernel sums, which the exact path also does, untimed) / the same; rows predicted, the
worst |sampled − exact| / half-width and half-width / bound, the tuned CARA-T θ* both ways,
and each path's peak memory.

    python benchmarks/bench_tune_scale.py [--rows 1000000] [--batches 25] [--factors 1,4,16] [--reuse-exact]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import batch  # noqa: E402  (the same stream as the step benchmark)

TRAIN_ROWS, GAMMA = 100_000, 0.1          # γ = 1 / (d · var): the "scale" rule on unit-variance rows


def make(cache: Path, rows: int, batches: int) -> None:
    """The batches (float32 rows, labels, queries) and one forest per batch, in ``cache``."""
    from sklearn.ensemble import RandomForestClassifier

    if (cache / "done").exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(batches):
        data, queries = batch(rng, t, rows)
        X, y = data.drop(columns="label").to_numpy(np.float32), data["label"].to_numpy(np.int8)
        np.save(cache / f"X{t}.npy", X)
        np.save(cache / f"y{t}.npy", y)
        np.save(cache / f"Q{t}.npy", queries.to_numpy(np.float64))
        forest = RandomForestClassifier(n_estimators=50, max_depth=12, random_state=t, n_jobs=1)
        joblib.dump(forest.fit(X[:TRAIN_ROWS], y[:TRAIN_ROWS]), cache / f"model{t}.joblib")
    (cache / "done").write_text(f"{rows} {batches}")


def load(cache: Path, batches: int):
    Xs = [np.load(cache / f"X{t}.npy") for t in range(batches)]
    ys = [np.load(cache / f"y{t}.npy") for t in range(batches)]
    Qs = [np.load(cache / f"Q{t}.npy") for t in range(batches)]
    models = [joblib.load(cache / f"model{t}.joblib") for t in range(batches)]
    return Xs, ys, Qs, models


def exact_path(cache: Path, batches: int) -> dict:
    from cara_mlflow.costs import _second_terms, first_terms_of, predict_later

    Xs, ys, Qs, models = load(cache, batches)
    started = time.perf_counter()
    preds = predict_later(models, Xs)
    seconds = time.perf_counter() - started
    losses = [[None] * tp + [(p != y).astype(np.float64) for p, y in zip(row, ys[tp:])] for tp, row in enumerate(preds)]
    del preds
    T, approx = batches, ("exact", 0.01, 0, 2**27)
    now = np.full((T, T), np.nan)
    for t in range(1, T):
        L = np.column_stack([losses[tp][t] for tp in range(t)])
        now[:t, t] = first_terms_of(Xs[t].astype(np.float64), Qs[t], L, GAMMA, "exact", approx, t)
    then = _second_terms([(X.astype(np.float64), None) for X in Xs], Qs, losses, GAMMA, "exact", approx)
    np.savez(cache / "exact.npz", now=now, then=then)
    out = {"prediction_seconds": seconds, "peak_gib": peak_gib()}
    (cache / "exact.json").write_text(json.dumps(out))
    return out


def sampled_path(cache: Path, batches: int, kappa: float) -> dict:
    from cara_mlflow.matrix_sample import sampled_staleness_terms

    Xs, ys, Qs, models = load(cache, batches)
    Xk = [X.astype(np.float64) for X in Xs]                 # the kernel space (the forests read float32)

    predicting = [0.0]

    def timed(losses):
        started = time.perf_counter()
        out = losses()
        predicting[0] += time.perf_counter() - started
        return out

    def losses_of(t, rows):
        return timed(lambda: np.column_stack([m.predict(Xs[t][rows]) != ys[t][rows] for m in models[:t]]))

    started = time.perf_counter()
    result = sampled_staleness_terms(Xk, losses_of, lambda t: timed(lambda: models[t].predict(Xs[t]) != ys[t]),
                                     queries=Qs, gamma=GAMMA, kappa=kappa, method="auto", seed=0)
    seconds = time.perf_counter() - started
    np.savez(cache / f"sampled-{kappa:.6g}.npz", now=result.terms.psi_now, then=result.terms.psi_then,
             half=result.half_width)
    return {"seconds": seconds, "prediction_seconds": predicting[0], "n_predicted": result.n_predicted,
            "n_exact": result.n_exact, "bound_scale": result.bound_scale, "peak_gib": peak_gib()}


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(cache: Path, exact: dict, kappa: float, factor: float, sampled: dict) -> str:
    from cara_mlflow.costs import with_kappa
    from cara_mlflow.tuning import PolicyTuner

    ref, got = np.load(cache / "exact.npz"), np.load(cache / f"sampled-{kappa:.6g}.npz")
    half, err = got["half"], np.abs(got["now"] - ref["now"])
    hit = half > 0
    worst = float(np.max(err[hit] / half[hit])) if hit.any() else float("nan")
    taus = [PolicyTuner("cara-t").fit(with_kappa(m["now"] - m["then"], kappa)).best_params_["tau"] for m in (ref, got)]
    ratio = exact["prediction_seconds"]
    return (f"κ = {factor:g} × mean|Ψ̄| = {kappa:.4g}: sampled path's predictions {sampled['prediction_seconds']:.1f} s"
            f" / exact predictions {ratio:.1f} s = {sampled['prediction_seconds'] / ratio:.3f}× (target ≤ 0.2); "
            f"the sampled path whole (with its kernel sums) {sampled['seconds']:.1f} s = "
            f"{sampled['seconds'] / ratio:.3f}×;"
            f" rows predicted {sampled['n_predicted'] / sampled['n_exact']:.1%} of the exact path's; "
            f"{int(hit.sum())}/{hit.size - np.isnan(half).sum()} entries sampled; worst |err|/half-width "
            f"{worst:.2f}; worst half-width/bound {np.nanmax(half) / (0.01 * sampled['bound_scale']):.2f}; "
            f"CARA-T τ* exact {taus[0]:.6g}, sampled {taus[1]:.6g}; peak memory exact "
            f"{'not recorded' if exact['peak_gib'] is None else format(exact['peak_gib'], '.1f') + ' GiB'}, "
            f"sampled {sampled['peak_gib']:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--cache", default="/tmp/bench_tune_scale")
    parser.add_argument("--child", nargs="*")
    parser.add_argument("--reuse-exact", action="store_true",
                        help="the exact path's time and terms from an earlier run's cache (same --rows, --batches)")
    args = parser.parse_args()
    cache = Path(args.cache) / f"{args.rows}x{args.batches}"
    if args.child is not None:
        what = args.child[0]
        out = exact_path(cache, args.batches) if what == "exact" else \
            sampled_path(cache, args.batches, float(args.child[1]))
        print(json.dumps(out))
        return
    make(cache, args.rows, args.batches)
    common = ("--rows", str(args.rows), "--batches", str(args.batches), "--cache", args.cache)
    exact_json = cache / "exact.json"
    exact = json.loads(exact_json.read_text()) if args.reuse_exact and exact_json.exists() else child("exact", *common)
    ref = np.load(cache / "exact.npz")
    mean_bar = float(np.nanmean(np.abs(ref["now"] - ref["then"])))
    print(f"{args.batches} batches × {args.rows} rows; exact predictions {exact['prediction_seconds']:.1f} s, "
          f"mean |Ψ̄| {mean_bar:.4g}", flush=True)
    for factor in (float(f) for f in args.factors.split(",")):
        kappa = factor * mean_bar
        print(report(cache, exact, kappa, factor, child("sampled", f"{kappa!r}", *common)), flush=True)


if __name__ == "__main__":
    main()
