"""Tests of cara_mlflow.streams: one contract over every synthetic stream, then each concept."""

from __future__ import annotations

import numpy as np
import pytest

from cara_mlflow.streams import (
    STREAM_NAMES,
    SYNTHETIC_STREAMS,
    Batch,
    Stream,
    circle,
    covcon,
    gauss,
    make_stream,
    synthetic,
)

N_BATCHES = 12  # enough for a CovCon flip (batch 10); CIRCLE tests ask for more


# --------------------------------------------------------------------------------------------
# Slow references of the concepts: one point at a time, straight from the definitions.
# --------------------------------------------------------------------------------------------


def circle_schedule_slow(n_batches: int) -> list[tuple[float, float, float]]:
    """Batch by batch: find the two circles of Pesaranghader et al. around t and mix them."""
    circles = [(0.2, 0.5, 0.15), (0.4, 0.5, 0.2), (0.6, 0.5, 0.25), (0.8, 0.5, 0.3)]
    schedule = []
    for t in range(n_batches):
        k = min(t // 50, 3)
        if k == 3:
            schedule.append(circles[3])
            continue
        w = (t - 50 * k) / 50
        schedule.append(tuple((1 - w) * a + w * b for a, b in zip(circles[k], circles[k + 1])))
    return schedule


def true_label(kind: str, point, t: int, seed: int) -> int:
    x1, x2 = float(point[0]), float(point[1])
    if kind == "gauss":
        return int(x2 > 4 * (x1 - 0.5) ** 2)
    if kind == "covcon":
        s = 0.8 * np.sin(np.pi * x1)
        return int(s > x2) if (t // 10) % 2 == 0 else int(s < x2)
    c1, c2, r = circle_schedule_slow(t + 1)[t]
    return int((x1 - c1) ** 2 + (x2 - c2) ** 2 <= r**2)


def sibling(name: str) -> str:
    return name[:-1] + ("s" if name.endswith("d") else "d")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_names_in_order():
    assert list(SYNTHETIC_STREAMS) == [
        "gauss-d", "gauss-s", "circle-d", "circle-s", "covcon-d", "covcon-s",
    ]
    assert STREAM_NAMES == (
        "gauss-d", "gauss-s", "circle-d", "circle-s", "covcon-d", "covcon-s",
        "electricity", "covertype", "airlines",
    )


# --------------------------------------------------------------------------------------------
# The contract, over every synthetic stream
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SYNTHETIC_STREAMS))
def test_stream_contract(name):
    kind, suffix = name.split("-")
    stream = make_stream(name, n_batches=N_BATCHES, seed=3)

    assert isinstance(stream, Stream)
    assert stream.name == name and stream.seed == 3
    assert len(stream) == N_BATCHES and stream.n_features == 2
    assert list(stream) == list(stream.batches) and stream[-1] is stream.batches[-1]

    for t, b in enumerate(stream):
        assert isinstance(b, Batch)
        assert b.X.shape == (1000, 2) and b.X.dtype == np.float64
        assert b.y.shape == (1000,) and b.y.dtype == np.int64
        assert b.queries.shape == (100, 2) and b.queries.dtype == np.float64
        assert b.query_labels.shape == (100,) and b.query_labels.dtype == np.int64
        assert set(np.unique(b.y)) <= {0, 1} and set(np.unique(b.query_labels)) <= {0, 1}
        assert not b.X.flags.writeable and not b.y.flags.writeable
        assert not b.queries.flags.writeable
        # the data's labels follow the true concept of batch t (checked on a few points)
        for i in (0, 499, 999):
            assert b.y[i] == true_label(kind, b.X[i], t, seed=3)

        if suffix == "d":
            idx = b.query_index
            assert idx.dtype == np.int64 and idx.shape == (100,)
            assert np.all(np.diff(idx) > 0)  # sorted, without replacement
            assert idx[0] >= 0 and idx[-1] < 1000
            np.testing.assert_array_equal(b.queries, b.X[idx])
            np.testing.assert_array_equal(b.query_labels, b.y[idx])
        else:
            assert b.query_index is None
            centre = [0.33, 0.5] if kind == "circle" else [0.5, 0.5]
            assert np.abs(b.queries - centre).max() < 6 * 0.015
            expected = [true_label(kind, q, t, seed=3) for q in b.queries]
            np.testing.assert_array_equal(b.query_labels, expected)

    all_y = np.concatenate([b.y for b in stream])
    assert 0 < all_y.mean() < 1  # both classes over the stream

    again = make_stream(name, n_batches=N_BATCHES, seed=3)
    other_seed = make_stream(name, n_batches=N_BATCHES, seed=4)
    other_queries = make_stream(sibling(name), n_batches=N_BATCHES, seed=3)
    for b, b2, b_other, b_sib in zip(stream, again, other_seed, other_queries):
        for field in ("X", "y", "queries", "query_labels"):
            np.testing.assert_array_equal(getattr(b, field), getattr(b2, field))
        if suffix == "d":
            np.testing.assert_array_equal(b.query_index, b2.query_index)
        assert not np.array_equal(b.X, b_other.X)
        assert not np.array_equal(b.queries, b_other.queries)
        np.testing.assert_array_equal(b.X, b_sib.X)
        np.testing.assert_array_equal(b.y, b_sib.y)
        assert not np.array_equal(b.queries, b_sib.queries)


@pytest.mark.parametrize("factory", [gauss, circle, covcon])
def test_factories_match_registry_and_defaults(factory):
    direct = factory(queries="static", n_batches=2, batch_size=30, seed=5)
    via_name = SYNTHETIC_STREAMS[f"{factory.__name__}-s"](n_batches=2, batch_size=30, seed=5)
    assert direct.name == via_name.name == f"{factory.__name__}-s"
    np.testing.assert_array_equal(direct[1].queries, via_name[1].queries)
    default = factory(n_batches=1)
    assert default.name == f"{factory.__name__}-d" and default.seed == 0
    assert default[0].X.shape == (1000, 2) and default[0].queries.shape == (100, 2)


def test_kinds_draw_independently_for_the_same_seed():
    g, c = gauss(n_batches=1, seed=0)[0], covcon(n_batches=1, seed=0)[0]
    g_noise = g.X - np.array([1 / 30, 0.5 - 1 / 30])
    c_noise = c.X - 0.1
    assert not np.allclose(g_noise, c_noise)
    assert not np.array_equal(g.query_index, c.query_index)


def test_query_counts_follow_the_arguments():
    s = covcon(n_batches=2, batch_size=200, query_fraction=0.25, seed=0)
    assert s[0].queries.shape == (50, 2) and len(np.unique(s[0].query_index)) == 50
    full = gauss(n_batches=1, batch_size=40, query_fraction=1.0)
    np.testing.assert_array_equal(full[0].query_index, np.arange(40))
    assert circle(queries="static", n_batches=1, n_static_queries=7)[0].queries.shape == (7, 2)
    # -S ignores query_fraction, so a tiny batch is fine there
    assert gauss(queries="static", n_batches=1, batch_size=3)[0].queries.shape == (100, 2)


def test_static_queries_are_a_gaussian_at_the_centre():
    q = gauss(queries="static", n_batches=20, seed=0)
    Q = np.concatenate([b.queries for b in q])
    np.testing.assert_allclose(Q.mean(axis=0), [0.5, 0.5], atol=0.002)
    np.testing.assert_allclose(Q.std(axis=0), [0.015, 0.015], rtol=0.05)
    assert not np.array_equal(q[0].queries, q[1].queries)  # fresh queries every batch


# --------------------------------------------------------------------------------------------
# The concepts
# --------------------------------------------------------------------------------------------


def test_gauss_covariate_drift_and_fixed_boundary():
    s = gauss(n_batches=30, seed=1)
    for t, b in enumerate(s):
        c = ((t + 1) % 15) / 30
        np.testing.assert_allclose(b.X.mean(axis=0), [c, 0.5 - c], atol=0.015)
        np.testing.assert_allclose(b.X.std(axis=0), [0.1, 0.1], rtol=0.1)
        expected = b.X[:, 1] > 4 * (b.X[:, 0] - 0.5) ** 2
        np.testing.assert_array_equal(b.y, expected)
    np.testing.assert_array_equal(s[3].X.mean(axis=0).round(1), s[18].X.mean(axis=0).round(1))


def test_covcon_means_and_periodic_flip():
    s = covcon(queries="static", n_batches=41, seed=2)
    for t, b in enumerate(s):
        np.testing.assert_allclose(b.X.mean(axis=0), ((t + 1) % 7) / 10, atol=0.015)
        np.testing.assert_allclose(b.X.std(axis=0), [0.1, 0.1], rtol=0.1)
        above = 0.8 * np.sin(np.pi * b.X[:, 0]) > b.X[:, 1]
        flipped = t in range(10, 20) or t in range(30, 40)
        np.testing.assert_array_equal(b.y, ~above if flipped else above)
    # the static queries at (0.5, 0.5): 0.8 sin(pi/2) = 0.8 > 0.5, so all 1, then all 0
    assert s[9].query_labels.all() and not s[10].query_labels.any()
    assert not s[19].query_labels.any() and s[20].query_labels.all()
    assert s[40].query_labels.all()


def test_circle_schedule_matches_the_slow_reference():
    s = circle(n_batches=200, batch_size=300, seed=7)
    reference = circle_schedule_slow(200)
    np.testing.assert_allclose(synthetic._circle_schedule(200), reference, atol=1e-12)
    for t, b in enumerate(s):
        c1, c2, r = reference[t]
        assert 0 <= b.X.min() and b.X.max() <= 1
        np.testing.assert_array_equal(b.y, (b.X[:, 0] - c1) ** 2 + (b.X[:, 1] - c2) ** 2 <= r**2)


def test_circle_drifts_from_batch_0_through_the_offline_window():
    sched = synthetic._circle_schedule(100)
    np.testing.assert_allclose(sched[0], [0.2, 0.5, 0.15])
    np.testing.assert_allclose(sched[50], [0.4, 0.5, 0.2])
    steps = np.diff(sched, axis=0)
    assert np.all(steps[:, 0] > 0) and np.all(steps[:, 2] > 0)  # moves right and grows at every batch
    # at a constant pace (one circle per 50 batches)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-12)
    # the schedule of a batch does not depend on the stream's length
    np.testing.assert_array_equal(synthetic._circle_schedule(30), sched[:30])
    # the offline window (batches 0-24) sees the concept change: no two batches share a labelling
    s = circle(n_batches=25, seed=0)
    first = s[0]
    c1, c2, r = sched[24]
    assert not np.array_equal(first.y, (first.X[:, 0] - c1) ** 2 + (first.X[:, 1] - c2) ** 2 <= r**2)


def test_circle_static_queries_are_inside_the_circle_in_91_percent_of_online_batches():
    """The paper's LR accuracy of 0.09 on CIRCLE-S: an LR that answers "outside" everywhere."""
    shares = []
    for seed in range(5):
        s = circle(queries="static", n_batches=100, seed=seed)
        shares.append([b.query_labels.mean() for b in s.batches])
    share = np.asarray(shares)  # (seed, batch): share of the static queries inside the circle
    assert 0.89 <= share[:, 26:].mean() <= 0.93
    assert share[:, 25].min() >= 0.95  # inside when the first online model is trained ...
    assert share[:, 96:].mean() <= 0.25  # ... and mostly outside at the end: the circle moves past


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_batches": 0}, "n_batches must be an integer >= 1"),
        ({"n_batches": 2.0}, "n_batches must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"query_fraction": 0}, r"query_fraction must be a number in \(0, 1\]"),
        ({"query_fraction": 1.5}, r"query_fraction must be a number in \(0, 1\]"),
        ({"query_fraction": float("nan")}, r"query_fraction must be a number in \(0, 1\]"),
        ({"query_fraction": "0.1"}, r"query_fraction must be a number in \(0, 1\]"),
        ({"query_fraction": 0.01, "batch_size": 20}, "at least one query"),
        ({"n_static_queries": 0}, "n_static_queries must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"seed": None}, "seed must be an integer >= 0"),
        ({"queries": "dynamic"}, "queries must be 'data' or 'static'"),
    ],
)
@pytest.mark.parametrize("factory", [gauss, circle, covcon])
def test_bad_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_numpy_integers_are_accepted():
    s = gauss(n_batches=np.int64(2), batch_size=np.int32(20), seed=np.uint8(1))
    assert len(s) == 2 and s.seed == 1 and type(s.seed) is int


def test_unknown_name():
    with pytest.raises(ValueError) as err:
        make_stream("covtype")
    assert str(err.value) == (
        "unknown stream 'covtype': expected one of gauss-d, gauss-s, circle-d, circle-s, "
        "covcon-d, covcon-s, electricity, covertype, airlines"
    )
    with pytest.raises(ValueError, match="unknown stream 'GAUSS-D'"):
        make_stream("GAUSS-D")


@pytest.mark.parametrize("name", ["electricity", "covertype", "airlines"])
def test_real_data_streams_give_a_clear_error(name):
    with pytest.raises(
        ValueError, match=f"stream '{name}' needs a data file: not available yet in this version"
    ):
        make_stream(name)


def test_make_stream_forwards_arguments_and_fixes_the_query_stream():
    s = make_stream("covcon-s", n_batches=3, batch_size=10, seed=9, n_static_queries=4)
    assert (s.name, len(s), s.seed, s[0].X.shape, s[0].queries.shape) == (
        "covcon-s", 3, 9, (10, 2), (4, 2),
    )
    with pytest.raises(TypeError):
        make_stream("covcon-s", queries="data")
    with pytest.raises(ValueError, match="n_batches"):
        make_stream("gauss-d", n_batches=0)


def test_batch_and_stream_check_their_shapes():
    X, y = np.zeros((4, 2)), np.zeros(4, dtype=np.int64)
    Q, yq = np.zeros((2, 2)), np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        Batch(X=np.zeros(4), y=y, queries=Q, query_labels=yq, query_index=None)
    with pytest.raises(ValueError, match="queries must be a 2-D array"):
        Batch(X=X, y=y, queries=np.zeros((2, 3)), query_labels=yq, query_index=None)
    with pytest.raises(ValueError, match="query_labels must have shape"):
        Batch(X=X, y=y, queries=Q, query_labels=y, query_index=None)
    with pytest.raises(ValueError, match="query_index must be None or"):
        Batch(X=X, y=y, queries=Q, query_labels=yq, query_index=np.arange(3))
    with pytest.raises(ValueError, match="non-empty tuple"):
        Stream(name="x", batches=(), seed=0)
    b2 = Batch(X=X, y=y, queries=Q, query_labels=yq, query_index=None)
    b3 = Batch(X=np.zeros((4, 3)), y=y, queries=np.zeros((2, 3)), query_labels=yq,
               query_index=None)
    with pytest.raises(ValueError, match="same number of features"):
        Stream(name="x", batches=(b2, b3), seed=0)
    with pytest.raises(ValueError, match="features must name the 2 columns of X"):
        Batch(X=X, y=y, queries=Q, features=("x1",))


def test_a_generated_batch_has_no_store_provenance():
    b = make_stream("gauss-s", n_batches=1, batch_size=30, seed=0)[0]
    assert (b.id, b.features, b.target, b.data_path, b.has_query_file) == (None, None, None, None, False)
    assert (b.n_rows, b.n_queries) == (30, len(b.queries))
