import json
import math

import numpy as np
import pytest
from river.drift import ADWIN
from river.drift.binary import DDM

from cara_mlflow.policies import (
    POLICIES,
    AdwinPolicy,
    CaraCT,
    CaraP,
    CaraT,
    DdmPolicy,
    Decision,
    Markov,
    NeverRetrain,
    Observation,
    OracleFollower,
    Policy,
    make_policy,
    policy_from_dict,
)

# Small constructor parameters per registered policy, as river's `_unit_test_params`.
PARAMS = {
    "cara-t": {"tau": 1.5},
    "cara-ct": {"tau_cum": 3.0},
    "cara-p": {"phi": 4, "offset": 1},
    "markov": {"kappa": 1.2},
    "rent": {"kappa": 1.2},
    "nr": {},
    "oracle": {"retrain_at": [3, 10, 11, 20]},
    "adwin": {"delta": 0.01, "clock": 8},
    "ddm": {"warm_start": 20},
}


def obs(t, psi_bar=0.0, trained_on=0, **kw):
    return Observation(t=t, trained_on=trained_on, psi_bar=psi_bar, **kw)


def make_stream(seed, n_batches=30, size=200):
    """(psi_bar, errors, kappa) per batch; the error rate steps up and down so detectors fire."""
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(n_batches):
        rate = 0.05 + 0.6 * ((t // 5) % 2) + 0.02 * t
        errors = (rng.random(size) < rate).astype(np.int8)
        kappa = None if t % 3 else float(rng.uniform(0.5, 2.0))
        stream.append((float(rng.exponential(1.0) - 0.2), errors, kappa))
    return stream


# Retrains decided at these batches fail (a rejected challenger): no reset, the state carries on.
FAILED_RETRAINS = set(range(3, 31, 3))


def run(policy, stream, start=0, trained_on=0):
    """Algorithm 1: decide at t = start+1, ..., reset when a retrain lands."""
    decisions = []
    for t, (psi, errors, kappa) in enumerate(stream[start:], start=start + 1):
        d = policy.decide(
            Observation(t=t, trained_on=trained_on, psi_bar=psi, errors=errors, kappa=kappa)
        )
        decisions.append(d)
        if d.retrain and t not in FAILED_RETRAINS:
            policy.reset(t)
            trained_on = t
    return decisions, trained_on


# --------------------------------------------------------------------------- contract, every policy


def test_params_cover_the_registry():
    assert list(POLICIES) == [
        "cara-t", "cara-ct", "cara-p", "markov", "rent", "nr", "oracle", "adwin", "ddm"
    ]
    assert set(PARAMS) == set(POLICIES)


@pytest.mark.parametrize("name", list(POLICIES))
def test_contract(name):
    params = PARAMS[name]
    stream = make_stream(seed=7)
    p = make_policy(name, **params)
    assert isinstance(p, POLICIES[name]) and p.name == name
    assert name in repr(p)
    assert set(p.tunable) <= set(p.get_params())

    # get_params round-trips, through JSON too.
    params_json = json.loads(json.dumps(p.get_params(), allow_nan=False))
    assert make_policy(name, **params_json).get_params() == p.get_params()

    full, _ = run(p, stream)
    assert all(isinstance(d, Decision) and isinstance(d.retrain, bool) for d in full)
    assert all(d.reason and math.isfinite(d.score) for d in full)
    assert all(d.action == ("retrain" if d.retrain else "keep") for d in full)
    if name != "nr":
        assert any(d.retrain for d in full), "the stream should exercise reset()"

    # Cut anywhere, serialise, rebuild: the rest of the decisions are the same.
    for cut in (1, 4, 9, 13, 22, 29):
        head = make_policy(name, **params)
        _, trained_on = run(head, stream[:cut])
        blob = json.dumps(head.to_dict(), allow_nan=False)
        rebuilt = policy_from_dict(json.loads(blob))
        assert type(rebuilt) is type(head)
        assert rebuilt.get_state() == head.get_state()
        assert run(rebuilt, stream, start=cut, trained_on=trained_on)[0] == full[cut:]
        # get_state() must not disturb the original either.
        assert run(head, stream, start=cut, trained_on=trained_on)[0] == full[cut:]

    # reset() brings the state back to a fresh one.
    p.reset(31)
    assert p.get_state() == make_policy(name, **params).get_state()


# --------------------------------------------------------------------------- CARA variants


def test_cara_t_threshold():
    p = CaraT(tau=2)
    decisions = [p.decide(obs(1, psi)) for psi in (1.9, 2.0, 2.1)]
    assert [d.retrain for d in decisions] == [False, True, True]
    assert [d.score for d in decisions] == [1.9, 2.0, 2.1]
    assert decisions[2].reason == "Ψ̄=2.1 ≥ τ=2"
    assert p.get_state() == {}


def test_cara_ct_accumulates_until_reset():
    p = CaraCT(tau_cum=2.5)
    assert [p.decide(obs(t, 1.0)).retrain for t in (1, 2, 3)] == [False, False, True]
    # A Retrain decision whose retrain did not land keeps the staleness.
    d = p.decide(obs(4, 1.0))
    assert d.retrain and d.score == 4.0
    p.reset(4)
    assert p.get_state() == {"cum": 0.0, "n": 0}
    assert p.decide(obs(5, 1.0, trained_on=4)).score == 1.0


def test_cara_ct_agrees_bit_for_bit_with_cumsum():
    row = np.random.default_rng(3).random(200) * 0.1
    cum = np.cumsum(row)
    tau_cum = float(cum[137])  # exactly on a partial sum: the comparison must not wobble
    p = CaraCT(tau_cum=tau_cum)
    decisions = [p.decide(obs(t, psi)) for t, psi in enumerate(row.tolist(), start=1)]
    assert [d.score for d in decisions] == cum.tolist()
    assert [d.retrain for d in decisions] == (cum >= tau_cum).tolist()
    assert decisions[137].retrain and not decisions[136].retrain


def test_cara_p_periodic():
    p = CaraP(phi=3, offset=1)
    assert [t for t in range(1, 10) if p.decide(obs(t)).retrain] == [1, 4, 7]
    assert [CaraP(phi=3).decide(obs(t)).retrain for t in range(1, 7)] == [
        False, False, True, False, False, True,
    ]
    assert all(CaraP(phi=1).decide(obs(t)).retrain for t in range(1, 5))


def test_markov_kappa_from_constructor_and_observation():
    p = Markov(kappa=2.0)
    assert not p.decide(obs(1, 1.5)).retrain
    assert p.decide(obs(1, 2.0)).retrain
    assert p.decide(obs(1, 1.5, kappa=1.0)).retrain  # obs.kappa wins
    assert not p.decide(obs(1, 1.5, kappa=3.0)).retrain
    assert Markov().decide(obs(1, 1.5, kappa=1.5)).reason == "Ψ̄=1.5 ≥ κ=1.5"
    with pytest.raises(ValueError, match="kappa"):
        Markov().decide(obs(1, 1.5))
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="kappa"):
            p.decide(obs(1, 1.5, kappa=bad))


def test_never_retrain():
    p = NeverRetrain()
    assert not any(p.decide(obs(t, 1e9)).retrain for t in range(1, 20))


def test_oracle_follower():
    p = OracleFollower(retrain_at=np.array([5, 2, 2]))
    assert p.retrain_at == [2, 5] and p.get_params() == {"retrain_at": [2, 5]}
    assert type(p.retrain_at[0]) is int
    assert [t for t in range(1, 8) if p.decide(obs(t)).retrain] == [2, 5]
    assert OracleFollower(retrain_at=[]).decide(obs(1)).action == "keep"


# --------------------------------------------------------------------------- drift detectors

DETECTORS = [
    (AdwinPolicy, ADWIN, {}),
    (AdwinPolicy, ADWIN, {"delta": 0.05, "clock": 1, "grace_period": 0}),
    (DdmPolicy, DDM, {}),
    (DdmPolicy, DDM, {"warm_start": 5, "drift_threshold": 2.5}),
]


def hand_driven(detector_cls, params, batches, retrain_lands=True):
    """The slow reference: drive a river detector by hand, one fresh detector per landed retrain."""
    detector = detector_cls(**params)
    out = []
    for bits in batches:
        hits = []
        for i, x in enumerate(bits):
            detector.update(int(x))
            if detector.drift_detected:
                hits.append(i)
        out.append(hits)
        if hits and retrain_lands:
            detector = detector_cls(**params)
    return out


@pytest.mark.parametrize("policy_cls, detector_cls, params", DETECTORS)
def test_detector_fires_on_a_burst_and_not_before(policy_cls, detector_cls, params):
    rng = np.random.default_rng(1)
    batches = [(rng.random(300) < rate).astype(int) for rate in (0.25, 0.25, 0.25, 0.25, 0.9)]
    p = policy_cls(**params)
    decisions = [p.decide(obs(t, errors=b)) for t, b in enumerate(batches, start=1)]
    assert [d.retrain for d in decisions] == [False] * 4 + [True]
    first = hand_driven(detector_cls, params, batches)[-1][0]
    assert decisions[-1].reason.startswith(f"{p._label} signalled drift at sample {first} of 300")


@pytest.mark.parametrize("retrain_lands", [True, False])
@pytest.mark.parametrize("policy_cls, detector_cls, params", DETECTORS)
def test_detector_matches_hand_driven_river(policy_cls, detector_cls, params, retrain_lands):
    stream = make_stream(seed=11, n_batches=25)
    batches = [errors for _, errors, _ in stream]
    expected = hand_driven(detector_cls, params, batches, retrain_lands)
    p = policy_cls(**params)
    for t, (bits, hits) in enumerate(zip(batches, expected), start=1):
        # Resuming from JSON before every batch changes nothing, detections or not.
        q = policy_from_dict(json.loads(json.dumps(p.to_dict())))
        d = p.decide(obs(t, errors=bits))
        assert q.decide(obs(t, errors=bits)) == d
        assert d.retrain == bool(hits) and d.score == len(hits)
        if hits:
            assert f"at sample {hits[0]} of {bits.size}" in d.reason
            if retrain_lands:
                p.reset(t)
    assert sum(map(bool, expected)) >= 2  # the stream really exercises the detector


@pytest.mark.parametrize("policy_cls, detector_cls, params", DETECTORS)
def test_detector_resumes_after_a_detection_on_the_last_sample(policy_cls, detector_cls, params):
    rng = np.random.default_rng(5)
    rates = np.repeat([0.05, 0.5, 0.05, 0.6], 600)
    stream = (rng.random(rates.size) < rates).astype(int)
    ref = detector_cls(**params)
    hits = []
    for i, x in enumerate(stream.tolist()):
        ref.update(x)
        if ref.drift_detected:
            hits.append(i)
    k = hits[0]
    assert len(hits) >= 2
    # Batch 1 ends exactly on the detection; no reset, so the detector must reset itself.
    batches = [stream[: k + 1]] + [stream[s : s + 250] for s in range(k + 1, stream.size, 250)]
    p = policy_cls(**params)
    d = p.decide(obs(1, errors=batches[0]))
    assert d.retrain and f"at sample {k} of {k + 1}" in d.reason
    assert p.get_state()["n_errors"] == 0
    q = policy_from_dict(json.loads(json.dumps(p.to_dict())))
    offset = k + 1
    for t, b in enumerate(batches[1:], start=2):
        dp, dq = p.decide(obs(t, errors=b)), q.decide(obs(t, errors=b))
        assert dp == dq
        want = [h - offset for h in hits if offset <= h < offset + b.size]
        assert dp.score == len(want) and (not want or f"at sample {want[0]} " in dp.reason)
        offset += b.size


def test_detector_state_is_packed_bits_after_the_last_detection():
    p = DdmPolicy()
    p.decide(obs(1, errors=np.zeros(13, bool)))
    assert p.get_state() == {"n_errors": 13, "errors": "AAA="}
    p.decide(obs(2, errors=np.ones(3)))
    assert p.get_state()["n_errors"] == 16
    p.reset(2)
    assert p.get_state() == {"n_errors": 0, "errors": ""}


@pytest.mark.parametrize("name", ["adwin", "ddm"])
def test_detector_errors_are_required_and_binary(name):
    p = make_policy(name)
    with pytest.raises(ValueError, match=f"errors: the {name} policy needs the current model's"):
        p.decide(obs(1))
    for bad in ([0, 1, 2], [0.0, 0.5], [0, math.nan], [[0, 1]], ["0", "1"]):
        with pytest.raises(ValueError, match="errors: expected"):
            p.decide(obs(1, errors=np.asarray(bad)))
    # A rejected batch leaves the state alone.
    assert p.get_state() == make_policy(name).get_state()
    assert not p.decide(obs(1, errors=np.array([], dtype=int))).retrain


# --------------------------------------------------------------------------- bad input


def test_unknown_policy_name():
    with pytest.raises(ValueError, match="unknown policy 'x': expected one of cara-t, cara-ct, "):
        make_policy("x")
    with pytest.raises(ValueError, match="unknown policy"):
        policy_from_dict({"policy": "x", "params": {}})


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("cara-t", {"tau": math.nan}, "tau: expected a finite number"),
        ("cara-t", {"tau": math.inf}, "tau"),
        ("cara-t", {"tau": "2"}, "tau"),
        ("cara-t", {"tau": True}, "tau"),
        ("cara-t", {}, "tau: the cara-t policy needs this parameter"),
        ("cara-t", {"tau": 1.0, "phi": 2}, "phi: not a parameter of the cara-t policy"),
        ("cara-ct", {"tau_cum": math.nan}, "tau_cum"),
        ("cara-p", {"phi": 0}, r"phi: expected an integer >= 1, got 0"),
        ("cara-p", {"phi": 2.5}, "phi"),
        ("cara-p", {"phi": 3, "offset": 3}, r"offset: expected an integer in \[0, 2\], got 3"),
        ("cara-p", {"phi": 3, "offset": -1}, "offset"),
        ("markov", {"kappa": -1.0}, r"kappa: expected a finite number > 0"),
        ("markov", {"kappa": 0}, "kappa"),
        ("markov", {"kappa": math.nan}, "kappa"),
        ("oracle", {"retrain_at": 3}, "retrain_at: expected a list"),
        ("oracle", {"retrain_at": [1, -2]}, r"retrain_at\[1\]: expected an integer >= 0"),
        ("oracle", {"retrain_at": [1.5]}, r"retrain_at\[0\]"),
        ("adwin", {"delta": 0.0}, r"delta: expected a number in \(0, 1\)"),
        ("adwin", {"delta": 1.0}, "delta"),
        ("adwin", {"clock": 0}, "clock"),
        ("adwin", {"max_buckets": 0}, "max_buckets"),
        ("adwin", {"min_window_length": 0}, "min_window_length"),
        ("adwin", {"grace_period": -1}, "grace_period"),
        ("ddm", {"warm_start": -1}, "warm_start"),
        ("ddm", {"warning_threshold": -2.0}, "warning_threshold"),
        ("ddm", {"drift_threshold": math.nan}, "drift_threshold"),
    ],
)
def test_bad_params(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_policy(name, **params)


def test_params_are_plain_json_types():
    p = CaraP(phi=np.int64(4), offset=2.0)
    assert p.get_params() == {"phi": 4, "offset": 2}
    assert all(type(v) is int for v in p.get_params().values())
    assert type(CaraT(tau=np.float32(0.5)).tau) is float
    assert repr(p) == "cara-p(phi=4, offset=2)"


@pytest.mark.parametrize("psi_bar", [math.nan, math.inf, None, "1"])
@pytest.mark.parametrize("name", ["cara-t", "cara-ct", "markov"])
def test_bad_psi_bar(name, psi_bar):
    p = make_policy(name, **PARAMS[name])
    with pytest.raises(ValueError, match="psi_bar"):
        p.decide(obs(1, psi_bar))
    assert p.get_state() == make_policy(name, **PARAMS[name]).get_state()


def test_bad_observation():
    with pytest.raises(ValueError, match="t: expected an integer >= 1"):
        Observation(t=0, trained_on=0, psi_bar=0.0)
    with pytest.raises(ValueError, match=r"trained_on: expected an integer in \[0, 4\]"):
        Observation(t=5, trained_on=5, psi_bar=0.0)
    with pytest.raises(ValueError, match="t: "):
        CaraT(tau=1.0).reset(-1)


@pytest.mark.parametrize(
    "name, state, field",
    [
        ("cara-ct", [], "state"),
        ("cara-ct", {"cum": 1.0}, "state.n"),
        ("cara-ct", {"cum": 1.0, "n": 1, "x": 0}, "state.x"),
        ("cara-ct", {"cum": math.nan, "n": 1}, "state.cum"),
        ("cara-ct", {"cum": "1", "n": 1}, "state.cum"),
        ("cara-ct", {"cum": 1.0, "n": -1}, "state.n"),
        ("cara-t", {"cum": 1.0}, "state.cum"),
        ("nr", None, "state"),
        ("adwin", {"n_errors": 3}, "state.errors"),
        ("adwin", {"n_errors": -1, "errors": ""}, "state.n_errors"),
        ("adwin", {"n_errors": 3, "errors": "!!"}, "state.errors"),
        ("adwin", {"n_errors": 3, "errors": 7}, "state.errors"),
        ("adwin", {"n_errors": 20, "errors": "AA=="}, "state.errors"),  # too few bytes
        ("ddm", {"n_errors": 3, "errors": "/w=="}, "state.errors"),  # bits set past n_errors
        # A run that fires DDM cannot be a state: get_state keeps only bits after a detection.
        ("ddm", {"n_errors": 64, "errors": "AAAAAP////8="}, "state.errors"),
    ],
)
def test_malformed_state(name, state, field):
    p = make_policy(name, **PARAMS[name])
    before = p.get_state()
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        p.set_state(state)
    assert p.get_state() == before


def test_from_dict_checks_the_class_and_allows_a_missing_state():
    d = CaraT(tau=1.0).to_dict()
    with pytest.raises(ValueError, match="policy: expected 'cara-ct'"):
        CaraCT.from_dict(d)
    assert CaraT.from_dict({"policy": "cara-t", "params": {"tau": 1.0}}).tau == 1.0
    assert isinstance(Policy.from_dict(d), CaraT)
    for bad in (None, {}, {"policy": "cara-t", "params": [1.0]}):
        with pytest.raises(ValueError, match="policy|params"):
            policy_from_dict(bad)
