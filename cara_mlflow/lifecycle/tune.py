"""``tune``: a model per offline batch, the offline cost matrix, θ* — registered as ``NAME.policy@active``."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Callable

import numpy as np

from .. import validate
from ..costs import staleness_terms
from ..errors import InputError
from ..names import DEFAULT_LOCK_TIMEOUT, DEFAULT_POLICY, DEFAULT_PSI_METHOD, DEFAULT_TUNING_METHOD
from ..oracle import solve
from ..policy_doc import PolicyDocument, PsiSettings
from ..staleness import check_psi_method, resolve_gamma
from ..store import BatchStore
from ..tracking import registry as reg
from ..tracking.projects import run_training_project
from ..train import TrainerSettings, fit_batch, project_parameters
from ..tuning import PolicyTuner
from .frame import managed

__all__ = ["tune", "QUERY_RULE"]

QUERY_RULE = "queries file of the batch if present, else the batch's own data points"


def tune(store: BatchStore, registry: reg.Registry, *, offline: tuple[int, int], kappa: float,
         policy: str = DEFAULT_POLICY, target: str = "label", trainer: TrainerSettings | None = None,
         gamma="scale", method: str = DEFAULT_TUNING_METHOD, project_uri: str | None = None,
         psi_method: str = DEFAULT_PSI_METHOD, progress: Callable[[int, int], None] | None = None,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> PolicyDocument:
    """Train a model per offline batch, build the cost matrix, tune θ*, register ``policy.json``.

    ``psi_method`` (:data:`~cara_mlflow.names.PSI_METHODS`) computes the offline Ψ̄ and is stored
    in the document as the default of every later step. Returns the policy document (also stored
    as ``NAME.policy@active``), with its registered version.
    """
    check_psi_method(psi_method)
    validate.policy_name(policy, tunable=True)
    kappa = validate.kappa(kappa)
    offline = validate.offline_window(offline)
    with managed(store, registry, lock_timeout):
        batches = _offline_batches(store, offline, target)
        models = _offline_models(store, registry, batches, trainer or TrainerSettings(), project_uri, progress)
        g = resolve_gamma(gamma, np.concatenate([b.X for b in batches]))
        terms = staleness_terms([(b.X, b.y) for b in batches], models, queries=[b.queries for b in batches],
                                gamma=g, method=psi_method, seed=offline[0])
        C = terms.cost_matrix(kappa)
        tuned, best = PolicyTuner(policy, method=method, start=offline[0]).fit(C), solve(C)
        psi = PsiSettings(g, "zero_one", psi_method, QUERY_RULE)
        doc = _document(registry.name, policy, tuned, best, kappa, psi, batches, trainer or TrainerSettings(),
                        project_uri, offline, method)
        return _register(registry, doc, C, tuned, best)


def _offline_batches(store: BatchStore, offline: tuple[int, int], target: str) -> list:
    """Every batch of the window, read with the first batch's features."""
    start, stop = offline
    infos = {b.id: b for b in store.list()}
    missing = [i for i in range(start, stop) if i not in infos]
    if missing:
        raise InputError(f"offline: batches {missing[:5]}{'…' if len(missing) > 5 else ''} are not in "
                         f"{store.batches_dir}; expected every batch of {start}:{stop}")
    first = store.read(start, target=target)
    features = list(first.features)
    return [first] + [store.read(i, target=target, features=features) for i in range(start + 1, stop)]


def _offline_models(store, registry, batches, trainer, project_uri, progress) -> list:
    """A model per offline batch: in-process, or through the user's project (as retrains will be)."""
    models = []
    for k, batch in enumerate(batches):
        if project_uri:
            params = project_parameters(trainer, data=store.info(batch.id).path, target=batch.target,
                                        features=batch.features)
            run_id = run_training_project(registry, project_uri, params, batch_id=batch.id, run_type="tune-train")
            with tempfile.TemporaryDirectory() as tmp:
                models.append(registry.load_model_uri(registry.model_of_run(run_id), tmp))
        else:
            models.append(fit_batch(batch.X, batch.y, trainer).model)
        if progress:
            progress(k + 1, len(batches))
    return models


def _document(name, policy, tuned, best, kappa, psi, batches, trainer, project_uri, offline, method):
    start = offline[0]
    figures = {"method": method, "offline_cost": tuned.best_cost_, "oracle_cost": best.cost,
               "oracle_retrain_at": [start + t for t in best.retrain_at[1:]],
               "strategy": [start + s for s in tuned.best_strategy_], "interval": tuned.result_.interval}
    return PolicyDocument(name=name, policy=policy, params=dict(tuned.best_params_), kappa=float(kappa), psi=psi,
                          target=batches[0].target, features=tuple(batches[0].features), trainer=trainer,
                          project_uri=project_uri, offline=offline, tuning=figures)


def _register(registry: reg.Registry, doc: PolicyDocument, C: np.ndarray, tuned, best) -> PolicyDocument:
    """The tuning run (params, figures, the matrix and its heat map), then ``NAME.policy@active``."""
    run_id = registry.runs.start("tune", run_name=f"tune-{doc.policy}-kappa{doc.kappa:g}")
    try:
        registry.runs.log_params(run_id, _params(doc))
        metrics = {"offline_cost": tuned.best_cost_, "oracle_cost": best.cost, "kappa": doc.kappa,
                   "gamma": doc.psi.gamma, "offline_retrains": tuned.result_.n_retrains,
                   "oracle_retrains": best.n_retrains}
        registry.runs.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v})
        _log_tuning_artifacts(registry, run_id, C, doc, tuned.best_strategy_, best.strategy)
        registry.runs.log_dict(run_id, doc.to_dict(), reg.POLICY_FILE)
        version = registry.register_policy(doc.to_dict(), run_id)
        registry.runs.end(run_id, "FINISHED")
    except BaseException:
        registry.runs.end(run_id, "FAILED")
        raise
    return replace(doc, version=version)


def _params(doc: PolicyDocument) -> dict:
    return {"policy": doc.policy, "kappa": doc.kappa, "gamma": doc.psi.gamma,
            "offline": f"{doc.offline[0]}:{doc.offline[1]}", "target": doc.target,
            **{f"theta.{k}": v for k, v in doc.params.items()},
            **{f"trainer.{k}": v for k, v in doc.to_dict()["trainer"].items()}}


def _log_tuning_artifacts(registry, run_id, C, doc: PolicyDocument, strategy, oracle_strategy) -> None:
    import matplotlib.pyplot as plt

    from ..plots import cost_matrix_figure

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "cost_matrix.npy"), C)
        fig = cost_matrix_figure(C, {f"{doc.policy} (tuned)": strategy, "ORACLE": oracle_strategy},
                                 start=doc.offline[0], title=f"offline cost matrix, κ={doc.kappa:g}")
        fig.savefig(os.path.join(tmp, "cost_matrix.png"), dpi=110)
        plt.close(fig)
        registry.runs.log_directory(run_id, tmp, "tuning")
