"""Quickstart: the CARA core on a synthetic stream, step by step, with the Python API.

    python examples/quickstart.py

Builds the CovCon-D stream, trains one model per batch, builds the offline cost matrix,
tunes CARA-T on it, then runs the tuned policy batch by batch online (as a cron step would),
saving and restoring its JSON state between batches, and compares it with the ORACLE.
"""

from __future__ import annotations

import json

from cara_mlflow.costs import staleness_terms, strategy_cost
from cara_mlflow.oracle import solve
from cara_mlflow.policies import Observation, make_policy, policy_from_dict
from cara_mlflow.simulate import make_model
from cara_mlflow.streams import make_stream
from cara_mlflow.tuning import PolicyTuner

KAPPA, N_OFFLINE = 20.0, 25

stream = make_stream("covcon-d", n_batches=60, seed=0)
models = [make_model("lr", b.X, b.y, seed=0) for b in stream]

# Offline: the cost matrix of the history, the tuned threshold, and γ fixed once for later.
offline = staleness_terms([(b.X, b.y) for b in stream[:N_OFFLINE]], models[:N_OFFLINE],
                          queries=[b.queries for b in stream[:N_OFFLINE]])
tuner = PolicyTuner("cara-t").fit(offline.cost_matrix(KAPPA))
print(f"γ = {offline.gamma:.3g}; tuned {tuner.best_params_}, offline cost {tuner.best_cost_:.1f}")

# Online: one decision per batch; the policy's state travels as JSON between "cron steps".
online = staleness_terms([(b.X, b.y) for b in stream[N_OFFLINE:]], models[N_OFFLINE:],
                         queries=[b.queries for b in stream[N_OFFLINE:]], gamma=offline.gamma)
C = online.cost_matrix(KAPPA)
state = json.dumps(make_policy("cara-t", **tuner.best_params_).to_dict())
trained_on, strategy = 0, [0]
for t in range(1, C.shape[0]):
    policy = policy_from_dict(json.loads(state))           # a fresh process resumes exactly
    decision = policy.decide(Observation(t=N_OFFLINE + t, trained_on=N_OFFLINE + trained_on,
                                         psi_bar=float(C[trained_on, t])))
    if decision.retrain:
        trained_on = t
        policy.reset(N_OFFLINE + t)                        # the retrain landed
        print(f"batch {N_OFFLINE + t}: retrain ({decision.reason})")
    strategy.append(trained_on)
    state = json.dumps(policy.to_dict())

best = solve(C)
print(f"CARA-T online cost {strategy_cost(C, strategy):.1f} vs ORACLE {best.cost:.1f} "
      f"({len(best.retrain_at) - 1} retrains at {[N_OFFLINE + t for t in best.retrain_at[1:]]})")
