"""benchmarks/appendix_e.py: the covertype evaluation subsample, the airlines nominal rows, stale raw files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cara_mlflow.streams import make_stream
from cara_mlflow.streams.real import airlines

from .helpers import load_benchmark


@pytest.fixture(scope="module")
def ae():
    return load_benchmark("appendix_e.py")


def test_subsample_keeps_the_d_query_contract(ae):
    full = make_stream("gauss-d", n_batches=4, batch_size=500, seed=3)
    sub = ae.subsample(full, 0.1, seed=3)
    assert sub.name == full.name and len(sub) == len(full)
    for b, f in zip(sub, full):
        assert b.n_rows == 50 and b.n_queries == round(f.n_queries / f.n_rows * 50) == 5
        assert np.array_equal(b.queries, b.X[b.query_index]) and np.array_equal(b.query_labels, b.y[b.query_index])
        assert np.all(np.diff(b.query_index) > 0) and b.query_index.max() < b.n_rows
        # every kept row is a row of the batch, with its label, in the batch's order
        rows = {tuple(x): y for x, y in zip(f.X.tolist(), f.y.tolist())}
        assert all(rows[tuple(x)] == y for x, y in zip(b.X.tolist(), b.y.tolist()))
        position = {tuple(x): i for i, x in enumerate(f.X.tolist())}
        assert np.all(np.diff([position[tuple(x)] for x in b.X.tolist()]) > 0)
    again, other = ae.subsample(full, 0.1, seed=3), ae.subsample(full, 0.1, seed=4)
    assert all(np.array_equal(a.X, b.X) and np.array_equal(a.query_index, b.query_index) for a, b in zip(sub, again))
    assert not all(np.array_equal(a.X, b.X) for a, b in zip(sub, other))


def test_trees_fit_on_the_full_batch_of_a_subsample(ae):
    full = make_stream("gauss-d", n_batches=1, batch_size=400, seed=0)[0]
    part = ae.subsample(make_stream("gauss-d", n_batches=1, batch_size=400, seed=0), 0.25, seed=0)[0]
    tree = ae.RiverTree(train_on={id(part.X): (part.X, full.X, full.y)}).fit(part.X, part.y)
    assert tree.tree._train_weight_seen_by_model == 400
    assert ae.RiverTree().fit(part.X, part.y).tree._train_weight_seen_by_model == 100


def _moa_csv(path: Path, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "Airline": rng.choice(["AA", "CO", "US", "WN"], n),
        "Flight": rng.choice([7, 269, 1558, 2400, 2466, 31], n),
        "AirportFrom": rng.choice(["SFO", "PHX", "LAX"], n),
        "AirportTo": rng.choice(["IAH", "CLT", "DFW", "SFO", "JFK"], n),
        "DayOfWeek": rng.choice([1, 2, 3, 7], n),
        "Time": rng.integers(10, 1400, n),
        "Length": rng.integers(30, 400, n),
        "Delay": rng.choice([0.0, 1.0, np.nan], n, p=[0.45, 0.45, 0.1]),
    })
    df.loc[0, "Time"] = df["Time"].min()          # a scaled 0: dropped from the CSR
    df.to_csv(path, index=False)
    return df


def test_airlines_nominal_rows_decode_the_one_hot_columns(ae, tmp_path):
    df = _moa_csv(tmp_path / "airlines.csv")
    stream = airlines(tmp_path / "airlines.csv", n_batches=4, query_fraction=0.2)
    rows = ae.AirlinesRows(ae.airlines_offsets(stream))
    decoded = [r for b in stream for r in rows(b.X)]
    # the slow reference: each CSV row, its categories' positions in the sorted categories, Time/Length min-max
    kept = df[df["Delay"].notna()].reset_index(drop=True)
    assert len(decoded) == len(kept)
    categories = {c: sorted(kept[c].unique()) for c in ae.AIRLINES_NOMINAL}
    span = {c: (kept[c].min(), kept[c].max()) for c in ae.AIRLINES_NUMERIC}
    for got, (_, row) in zip(decoded, kept.iterrows()):
        want = {c: str(categories[c].index(row[c])) for c in ae.AIRLINES_NOMINAL}
        want.update({c: (row[c] - lo) / (hi - lo) for c, (lo, hi) in span.items()})
        assert got.keys() == want.keys()
        assert all(got[c] == want[c] for c in ae.AIRLINES_NOMINAL)
        assert all(got[c] == pytest.approx(want[c]) for c in ae.AIRLINES_NUMERIC)
    # a tree learns and predicts on these rows (categorical splits, unseen categories)
    tree = ae.RiverTree(rows=rows).fit(stream[0].X, stream[0].y)
    assert set(tree.predict(stream[3].X).tolist()) <= {0, 1}


def test_airlines_rows_refuse_a_matrix_without_the_block_layout(ae):
    from scipy import sparse

    rows = ae.AirlinesRows((0, 2, 4, 6, 7))
    two_in_a_block = sparse.csr_matrix(np.array([[1, 1, 1, 0, 1, 0, 1, 1, 0, .5, .5]]))
    with pytest.raises(ValueError):
        rows(two_in_a_block)


def test_a_raw_file_of_other_settings_is_recomputed(ae, tmp_path):
    raw = tmp_path / "circle-d-seed0.json"
    task = ("circle-d", 0, str(tmp_path), 6, None, None, str(raw))
    assert ae.check_task(task) == ("circle-d", 0, False)               # no file
    raw.write_text(json.dumps({"stream": "circle-d", "seed": 0, "rows": []}))
    assert ae.check_task(task)[2] is False                              # an old file, no settings
    settings = ae._settings_only("circle-d", 0, str(tmp_path), 6, None)
    raw.write_text(json.dumps({"settings": settings, "rows": []}))
    assert ae.check_task(task)[2] is True
    raw.write_text(json.dumps({"settings": {**settings, "stream_digest": "a changed stream"}, "rows": []}))
    assert ae.check_task(task)[2] is False
    raw.write_text(json.dumps({"settings": {**settings, "kappas": settings["kappas"][:-1] + [1e3]}, "rows": []}))
    assert ae.check_task(task)[2] is False
