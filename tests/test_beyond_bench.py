"""benchmarks/beyond.py (issue 21): every policy scored on a small prepared stream, the report and figure."""

from pathlib import Path

import numpy as np
import pytest

from cara_mlflow.oracle import solve
from cara_mlflow.retune import run_retuned
from cara_mlflow.simulate import prepare, scpe

from .helpers import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def beyond():
    import sys

    sys.path.insert(0, str(BENCHMARKS))          # beyond.py imports reproduce.py, its neighbour
    try:
        yield load_benchmark("beyond.py")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_beyond_scores_every_policy_and_writes_the_report(beyond, tmp_path):
    prepared = {seed: prepare("covcon-d", model="lr", n_batches=14, batch_size=150, n_offline=5, seed=seed)
                for seed in range(3)}
    rows = beyond.score_stream(prepared, "covcon-d")
    policies = {r["policy"] for r in rows}
    assert {"mid", "cara-ct", "nr", "rr", "ens", "pool", "grow", "pool+grow", "grow2", "pool+grow10"} <= policies
    assert len(rows) == 3 * 10 * len(policies)                        # seeds × κ × policies
    # One cell by hand: seed 1, the 8th κ, pooled with seeds 0 and 2 and re-tuned every 5 batches.
    cell = [r for r in rows if r["seed"] == 1 and r["step"] == 7]
    kappa = cell[0]["kappa"]
    mats = {s: beyond.windows(p, kappa) for s, p in prepared.items()}
    run = run_retuned("cara-t", mats[1][0], mats[1][1], every=5, pool=[mats[0][0], mats[2][0]], start=5)
    oracle = solve(mats[1][1])
    got = next(r for r in cell if r["policy"] == "pool+grow")
    assert got["scpe"] == pytest.approx(scpe(run.cost, oracle.cost))
    assert got["oracle_retrains"] == len(oracle.retrain_at) - 1

    summary = beyond.summarise(rows)
    mid = [r for r in summary if r["policy"] == "mid"]
    assert len(mid) == 2 and all(r["diff"] == 0 and r["seeds"] == 3 for r in mid)
    assert all(np.isfinite(r["scpe"]) for r in summary)
    beyond.report(summary, ["airlines:4"], 1.0, tmp_path)
    beyond.figure(summary, tmp_path / "beyond.png")
    text = (tmp_path / "beyond.md").read_text()
    assert "| covcon-d | 3 |" in text and "## The goal (every dataset row)" in text
    assert "| pool+grow |" in text and "Not in the cache, skipped: airlines:4." in text
    assert (tmp_path / "beyond.png").stat().st_size > 10_000
