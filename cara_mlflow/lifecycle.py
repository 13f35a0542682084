"""The lifecycle manager: ``tune``, ``init``, ``step``, ``skip``, ``rollback``, ``status``, ``history``.

Plain functions over a :class:`~cara_mlflow.store.BatchStore` and a
:class:`~cara_mlflow.tracking.Registry`; the CLI is a thin adapter over them. Every command that
writes takes the store lock and checks that the tracking store answers (:func:`managed`) itself,
so a Python caller gets the same safety as cron.

The commit point of a step is the registered-model tag ``cara.last_batch``. Everything before it
is re-doable: a rerun after a crash finds the run, the retrain and the version a killed step left
behind by their tags, reuses a finished retrain's model and an already registered version, marks
a half-finished retrain FAILED and a stale batch run KILLED, and never registers a second version
for a batch.

``on_phase`` (a no-op by default) is called with the name of each point of :data:`PHASES` a
step passes; the crash tests use it to kill or pause the process there.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np

from . import validate
from .costs import staleness_terms
from .errors import InputError, SetupError
from .lock import store_lock
from .names import (
    DEFAULT_COOLDOWN,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_POLICY,
    DEFAULT_PSI_METHOD,
    DEFAULT_TUNING_METHOD,
    POLICY_ALIAS,
)
from .oracle import solve
from .policies import Observation, make_policy, policy_from_dict
from .policy_doc import POLICY_FORMAT, parse_policy_document
from .staleness import check_psi_method, psi_from_losses, resolve_gamma, zero_one_loss
from .store import BatchStore
from .tracking import registry as reg
from .tracking.projects import run_training_project
from .train import TrainerSettings, fit_batch, project_parameters
from .tuning import PolicyTuner

STATE_FILE = "policy_state.json"
QUERY_RULE = "queries file of the batch if present, else the batch's own data points"

#: The points of a step (and of ``init``) at which ``on_phase`` is called, in order.
#: ``during-retrain`` is called just before the retrain project's child process starts.
PHASES = ("after-read", "after-psi", "after-batch-run", "during-retrain", "after-retrain", "after-register",
          "after-gate", "after-alias", "after-commit")

Phase = Callable[[str], None]


def no_phase(name: str) -> None:
    """The default ``on_phase``: nothing happens at any phase."""


def default_project_uri() -> str:
    """The repository's own MLproject (entry point ``train``)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "MLproject").exists():
        raise SetupError("project_uri: the default MLproject was not found next to the package; "
                         "pass --project-uri pointing at a project with a `train` entry point")
    return str(root)


def active_policy(registry: reg.Registry) -> dict:
    """The tuned policy document of ``NAME.policy@active``, checked field by field
    (:func:`~cara_mlflow.policy_doc.parse_policy_document`), with its version as ``_version``."""
    text, version = registry.active_policy_text()
    document = parse_policy_document(text, f"{registry.policy_name}@{POLICY_ALIAS} ({reg.POLICY_FILE})")
    document["_version"] = version
    return document


@contextlib.contextmanager
def managed(store: BatchStore, registry: reg.Registry, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """The store lock (:class:`~cara_mlflow.errors.LockBusy` after ``lock_timeout`` s), then one
    request to the tracking store (:class:`~cara_mlflow.errors.Unreachable` if it cannot be
    reached): the frame of every lifecycle command that writes."""
    with store_lock(store.root, lock_timeout):
        registry.check_reachable()
        yield


# ---------------------------------------------------------------------------- results


@dataclass
class StepResult:
    """One processed (or waited-for) batch, as printed by ``step``."""

    status: str                     # processed | waiting | nothing | dry-run
    batch: int | None = None
    psi_bar: float | None = None
    decision: str | None = None     # keep | retrain | init | skip
    reason: str = ""
    version: int | None = None      # production version after the batch
    gate: str | None = None
    cumulative_cost: float | None = None
    message: str = ""

    def line(self) -> str:
        if self.status in ("waiting", "nothing"):
            return self.message
        psi = "" if self.psi_bar is None else f"Ψ̄={self.psi_bar:.4g}  "
        gate = f"  gate={self.gate}" if self.gate else ""
        prefix = "[dry run] " if self.status == "dry-run" else ""
        return (f"{prefix}batch {self.batch}: {psi}{self.decision} ({self.reason})  "
                f"production=v{self.version}{gate}")


# ---------------------------------------------------------------------------- helpers


def _batch_for(store: BatchStore, batch_id: int, doc: dict):
    return store.read(batch_id, target=doc["target"], features=doc["features"])


def _training_arrays(info: dict, rows) -> tuple[np.ndarray, int]:
    features = info["features"]
    return rows[features].to_numpy(dtype=np.float64), int(info["n_rows"])


def _psi_terms(model, batch, info: dict, rows, gamma: float,
               method: str) -> tuple[float, float, np.ndarray]:
    """Ψ(Q_t, D_t, M) and Ψ(Q_t, D_t', M) from the stored misclassified rows; and the 0/1 errors.

    Estimates (``method`` other than exact) are seeded by the batch id, so a step rerun after
    a crash computes the same Ψ̄.
    """
    errors = zero_one_loss(batch.y, model.predict(batch.X))
    now = psi_from_losses(batch.queries, batch.X, errors, gamma, method=method, seed=(batch.id, 0))
    X_wrong, n_rows = _training_arrays(info, rows)
    then = (psi_from_losses(batch.queries, X_wrong, np.ones(X_wrong.shape[0]), gamma, n_rows,
                            method=method, seed=(batch.id, 1)) if len(X_wrong) else 0.0)
    return now, then, errors


def _fresh_state(doc: dict, version: int) -> dict:
    policy = make_policy(doc["policy"], **doc["params"])
    return {"policy": policy.to_dict(), "cumulative_cost": 0.0, "cooldown_until": None,
            "model_version": version, "last_retrain": None}


def _finished_batch_run(registry: reg.Registry, batch_id: int):
    """The FINISHED batch run of a batch, or None: by id through ``cara.last_run`` when it is the
    committed batch, else by a search on the run's name (neither grows with the history's tags)."""
    run = registry.committed_run(batch_id)
    if run is not None and run.status == "FINISHED":
        return run
    runs = registry.runs.find("batch", batch=batch_id, statuses=("FINISHED",), max_results=1,
                              run_name=f"batch-{batch_id}")
    if not runs:   # a run renamed by hand, or a store written before names were relied on
        runs = registry.runs.find("batch", batch=batch_id, statuses=("FINISHED",), max_results=1)
    return runs[0] if runs else None


def _committed_state(registry: reg.Registry, last: int) -> dict:
    run = _finished_batch_run(registry, last)
    if run is None:
        raise SetupError(f"batch {last} is committed but has no FINISHED batch run in "
                                f"{registry.where}; the history was edited by hand")
    return registry.runs.load_json(run.run_id, STATE_FILE)


def _recover(registry: reg.Registry, last: int | None, pending: int | None) -> None:
    """Tidy what a killed step left: a committed batch's run is FINISHED, a pending one's KILLED.

    The committed batch's run is found by id (``cara.last_run``): under the store lock, the only
    batch run of a committed batch that can still be RUNNING is the one that committed it (a
    step killed after its commit point); the others were KILLED before it started. Without a
    usable hint (an older history, a crash between hint and commit) the runs are searched.
    """
    if last is not None:
        committed = registry.committed_run(last)
        if committed is not None and committed.status in ("RUNNING", "FINISHED"):
            if committed.status == "RUNNING":
                registry.runs.end(committed.run_id, "FINISHED")
        else:
            running = registry.runs.find("batch", batch=last, statuses=("RUNNING",))
            finished = registry.runs.find("batch", batch=last, statuses=("FINISHED",), max_results=1)
            for i, run in enumerate(running):
                keep = i == 0 and not finished
                registry.runs.end(run.run_id, "FINISHED" if keep else "KILLED")
    if pending is not None:
        for run in registry.runs.find("batch", batch=pending, statuses=("RUNNING",), run_name=f"batch-{pending}"):
            registry.runs.end(run.run_id, "KILLED")


@contextlib.contextmanager
def _batch_run(registry: reg.Registry, store: BatchStore, batch_id: int, tags: dict,
               previous: int | None = None) -> Iterator[str]:
    """The batch run of one batch: FAILED (with the error) if the block raises; else, once the
    block has committed, FINISHED and drawn on the timeline. ``previous``: the batch committed
    before this one (``batch_id`` is the next after it in the store)."""
    run_id = registry.runs.start("batch", run_name=f"batch-{batch_id}", tags={reg.TAG_BATCH: batch_id, **tags})
    try:
        yield run_id
    except BaseException as exc:
        message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        with contextlib.suppress(Exception):      # the tracking server may be what failed:
            registry.runs.set_tags(run_id, {"cara.error": message})
            registry.runs.end(run_id, "FAILED")    # else the next step's recovery closes the run
        raise
    registry.runs.end(run_id, "FINISHED")
    _write_timeline(registry, store, batch_id, previous=previous)


def _commit(registry: reg.Registry, run_id: str, batch_id: int, state: dict, on_phase: Phase = no_phase) -> None:
    """Store the manager state on the batch run, then move the commit point past the batch."""
    registry.runs.log_dict(run_id, state, STATE_FILE)
    registry.commit(batch_id, run_id)
    on_phase("after-commit")


def _timeline_run(registry: reg.Registry) -> str:
    runs = (registry.runs.find("timeline", max_results=1, run_name="timeline")
            or registry.runs.find("timeline", max_results=1))     # renamed by hand: before creating one
    if runs:
        return runs[0].run_id
    run_id = registry.runs.start("timeline", run_name="timeline")
    registry.runs.set_tags(run_id, {reg.TAG_TIMELINE_THROUGH: -1})
    return run_id


def _write_timeline(registry: reg.Registry, store: BatchStore, last: int, previous: int | None = None) -> None:
    """Timeline points (step = batch id) for every committed batch not yet drawn; never twice.

    When the timeline is drawn through ``previous`` (the batch committed before ``last``, which
    is the next after it) only ``last`` is missing: the store is listed only to catch up after a
    crash, so a step's cost does not grow with the number of batches kept in the store.
    """
    run_id = _timeline_run(registry)
    through = int(registry.runs.get(run_id).tags.get(reg.TAG_TIMELINE_THROUGH, -1))
    if through >= last:
        return
    if through == last - 1 or (previous is not None and previous < last and through >= previous):
        candidates = [last]
    else:
        candidates = [b.id for b in store.list() if through < b.id <= last] if store.exists() else [last]
    for batch_id in candidates:
        run = _finished_batch_run(registry, batch_id)
        if run is None:
            continue
        metrics = run.metrics
        keys = ("psi_bar", "decision", "cumulative_cost", "kappa")
        point = {k: metrics[k] for k in keys if k in metrics}
        version = run.tags.get(reg.TAG_MODEL_VERSION)
        if version:
            point["production_version"] = float(version)
        registry.runs.log_metrics(run_id, point, step=batch_id)
    registry.runs.set_tags(run_id, {reg.TAG_TIMELINE_THROUGH: last})


# ---------------------------------------------------------------------------- tune


def tune(store: BatchStore, registry: reg.Registry, *, offline: tuple[int, int], kappa: float,
         policy: str = DEFAULT_POLICY, target: str = "label", trainer: TrainerSettings | None = None,
         gamma="scale", method: str = DEFAULT_TUNING_METHOD, project_uri: str | None = None,
         psi_method: str = DEFAULT_PSI_METHOD, progress: Callable[[int, int], None] | None = None,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict:
    """Train a model per offline batch, build the cost matrix, tune θ*, register ``policy.json``.

    ``psi_method`` (:data:`~cara_mlflow.names.PSI_METHODS`) computes the offline Ψ̄ and
    is stored in the document as the default of every later step.
    Returns the policy document (also stored as ``NAME.policy@active``).
    """
    check_psi_method(psi_method)
    validate.policy_name(policy, tunable=True)
    kappa = validate.kappa(kappa)
    start, stop = validate.offline_window(offline)
    with managed(store, registry, lock_timeout):
        return _tune(store, registry, offline=(start, stop), kappa=kappa, policy=policy, target=target,
                     trainer=trainer or TrainerSettings(), gamma=gamma, method=method, project_uri=project_uri,
                     psi_method=psi_method, progress=progress)


def _tune(store, registry, *, offline, kappa, policy, target, trainer, gamma, method, project_uri, psi_method,
          progress) -> dict:
    start, stop = offline
    infos = {b.id: b for b in store.list()}
    missing = [i for i in range(start, stop) if i not in infos]
    if missing:
        raise InputError(f"offline: batches {missing[:5]}{'…' if len(missing) > 5 else ''} are not in "
                         f"{store.batches_dir}; expected every batch of {start}:{stop}")
    first = store.read(start, target=target)
    features = list(first.features)
    batches = [first] + [store.read(i, target=target, features=features) for i in range(start + 1, stop)]
    models = []
    for k, batch in enumerate(batches):
        if project_uri:
            models.append(_train_through_project(store, registry, batch, project_uri, trainer, target, features))
        else:
            models.append(fit_batch(batch.X, batch.y, trainer).model)
        if progress:
            progress(k + 1, len(batches))
    g = resolve_gamma(gamma, np.concatenate([b.X for b in batches]))
    terms = staleness_terms([(b.X, b.y) for b in batches], models, queries=[b.queries for b in batches], gamma=g,
                            method=psi_method, seed=start)
    C = terms.cost_matrix(kappa)
    tuned = PolicyTuner(policy, method=method, start=start).fit(C)
    best = solve(C)
    doc = {
        "format": POLICY_FORMAT, "name": registry.name, "policy": policy, "params": tuned.best_params_,
        "kappa": float(kappa),
        "psi": {"gamma": g, "loss": "zero_one", "method": psi_method, "queries": QUERY_RULE},
        "target": target, "features": features, "trainer": asdict(trainer), "project_uri": project_uri,
        "offline": {"start": start, "stop": stop},
        "tuning": {"method": method, "offline_cost": tuned.best_cost_, "oracle_cost": best.cost,
                   "oracle_retrain_at": [start + t for t in best.retrain_at[1:]],
                   "strategy": [start + s for s in tuned.best_strategy_],
                   "interval": tuned.result_.interval},
    }
    run_id = registry.runs.start("tune", run_name=f"tune-{policy}-kappa{kappa:g}")
    try:
        registry.runs.log_params(run_id, _params(doc))
        metrics = {"offline_cost": tuned.best_cost_, "oracle_cost": best.cost, "kappa": kappa, "gamma": g,
                   "offline_retrains": tuned.result_.n_retrains, "oracle_retrains": best.n_retrains}
        registry.runs.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v})
        _log_tuning_artifacts(registry, run_id, C, doc, tuned.best_strategy_, best.strategy, start)
        registry.runs.log_dict(run_id, doc, reg.POLICY_FILE)
        doc["policy_version"] = registry.register_policy(doc, run_id)
        registry.runs.end(run_id, "FINISHED")
    except BaseException:
        registry.runs.end(run_id, "FAILED")
        raise
    doc["tune_run_id"] = run_id
    return doc


def _params(doc: dict) -> dict:
    return {"policy": doc["policy"], "kappa": doc["kappa"], "gamma": doc["psi"]["gamma"],
            "offline": f"{doc['offline']['start']}:{doc['offline']['stop']}", "target": doc["target"],
            **{f"theta.{k}": v for k, v in doc["params"].items()},
            **{f"trainer.{k}": v for k, v in doc["trainer"].items()}}


def _log_tuning_artifacts(registry, run_id, C, doc, strategy, oracle_strategy, start) -> None:
    import matplotlib.pyplot as plt

    from .plots import cost_matrix_figure

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "cost_matrix.npy"), C)
        fig = cost_matrix_figure(C, {f"{doc['policy']} (tuned)": strategy, "ORACLE": oracle_strategy},
                                 start=start, title=f"offline cost matrix, κ={doc['kappa']:g}")
        fig.savefig(os.path.join(tmp, "cost_matrix.png"), dpi=110)
        plt.close(fig)
        registry.runs.log_directory(run_id, tmp, "tuning")


def _train_through_project(store, registry, batch, project_uri, trainer, target, features):
    params = project_parameters(trainer, data=store.info(batch.id).path, target=target, features=features)
    run_id = run_training_project(registry, project_uri, params, batch_id=batch.id, run_type="tune-train")
    with tempfile.TemporaryDirectory() as tmp:
        return registry.load_model_uri(registry.model_of_run(run_id), tmp)


# ---------------------------------------------------------------------------- init


def init(store: BatchStore, registry: reg.Registry, *, batch_id: int, adopt_version: int | None = None,
         project_uri: str | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
         on_phase: Phase = no_phase) -> StepResult:
    """Put the first production model in place (trained on ``batch_id`` or adopted) and commit the batch."""
    with managed(store, registry, lock_timeout):
        return _init(store, registry, batch_id, adopt_version, project_uri, on_phase)


def _init(store, registry, batch_id, adopt_version, project_uri, on_phase) -> StepResult:
    doc = active_policy(registry)
    last = registry.last_batch()
    if last is not None:
        raise InputError(f"batch: {registry.name!r} is already initialised (last batch {last}); "
                         "use `cara-mlflow step`, or `rollback` to change production")
    batch = _batch_for(store, batch_id, doc)
    _recover(registry, None, batch_id)
    trainer = TrainerSettings(**doc["trainer"])
    with _batch_run(registry, store, batch_id, {reg.TAG_DECISION: "init"}) as run_id:
        if adopt_version is not None:
            version = _adopt(registry, batch, adopt_version, run_id, doc)
        else:
            version = _train_and_register(store, registry, batch_id, doc, trainer, project_uri, trigger="init",
                                          gate="off", on_phase=on_phase)
        registry.set_production(version.version)
        state = _fresh_state(doc, version.version)
        state["cumulative_cost"] = doc["kappa"]
        state["last_retrain"] = {"batch": batch_id, "version": version.version, "gate": "off"}
        registry.runs.set_tags(run_id, {reg.TAG_MODEL_VERSION: version.version})
        registry.runs.log_metrics(run_id, {"decision": 1.0, "kappa": doc["kappa"], "cumulative_cost": doc["kappa"],
                                      "n_data": batch.n_rows, "n_queries": len(batch.queries)})
        _commit(registry, run_id, batch_id, state, on_phase)
    return StepResult("processed", batch_id, None, "init", "first production model", version.version, "off",
                      doc["kappa"])


def _adopt(registry, batch, version_number, run_id, doc) -> reg.VersionInfo:
    import pandas as pd

    version = registry.version(version_number)
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(version, tmp)
        wrong = np.flatnonzero(model.predict(batch.X) != batch.y)
    rows = pd.DataFrame(batch.X[wrong], columns=list(batch.features))
    rows.insert(0, "row", wrong)
    rows[batch.target] = batch.y[wrong]
    info = {"batch": batch.id, "n_rows": batch.n_rows, "features": list(batch.features), "target": batch.target,
            "holdout_index": [], "n_misclassified": int(wrong.size), "settings": None}
    with tempfile.TemporaryDirectory() as tmp:
        rows.to_parquet(os.path.join(tmp, "misclassified.parquet"), index=False)
        with open(os.path.join(tmp, "training.json"), "w") as fh:
            json.dump(info, fh)
        registry.runs.log_directory(run_id, tmp, "cara")
    for key, value in {reg.TAG_TRAINED_ON: batch.id, reg.TAG_TRIGGER: "adopt", reg.TAG_GATE: "off",
                       reg.TAG_TRAINING_RUN: run_id}.items():
        registry.tag_version(version.version, key, value)
    return registry.version(version.version)


def _train_and_register(store, registry, batch_id, doc, trainer, project_uri, *, trigger, gate=None,
                        on_phase: Phase = no_phase):
    """A registered version trained on ``batch_id``: reuse what a killed step left, else train."""
    existing = registry.versions(trained_on=batch_id)
    if existing:
        return existing[0]
    finished = [r for r in registry.runs.find("retrain", batch=batch_id, statuses=("FINISHED",))
                if r.tags.get(reg.TAG_MODEL_URI)]
    for stale in registry.runs.find("retrain", batch=batch_id, statuses=("RUNNING",)):
        registry.runs.end(stale.run_id, "FAILED")  # killed half-way: redone below
    if finished:
        run_id = finished[0].run_id
    else:
        uri = project_uri or doc.get("project_uri") or default_project_uri()
        params = project_parameters(trainer, data=store.info(batch_id).path, target=doc["target"],
                                    features=doc["features"])
        run_id = run_training_project(registry, uri, params, batch_id=batch_id,
                                      before_start=lambda: on_phase("during-retrain"))
    on_phase("after-retrain")
    model_uri = registry.model_of_run(run_id)
    tags = {reg.TAG_TRAINED_ON: batch_id, reg.TAG_TRIGGER: trigger, reg.TAG_TRAINING_RUN: run_id}
    if gate:
        tags[reg.TAG_GATE] = gate
    version = registry.register(model_uri, run_id=run_id, tags=tags)
    on_phase("after-register")
    return version


# ---------------------------------------------------------------------------- step


@dataclass(frozen=True)
class StepOptions:
    """How a step runs (the ``step`` command's options).

    ``psi_method`` overrides the policy document's ``psi.method`` (tune's choice); ``gate`` off
    promotes a retrained model without comparing it with production; ``cooldown`` is the number
    of batches without a retrain attempt after a rejected challenger.
    """

    dry_run: bool = False
    force_retrain: bool = False
    gate: bool = True
    cooldown: int = DEFAULT_COOLDOWN
    project_uri: str | None = None
    psi_method: str | None = None

    def __post_init__(self):
        validate.count(self.cooldown, "cooldown")
        if self.psi_method is not None:
            check_psi_method(self.psi_method)


def step(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> StepResult:
    """Process the next batch after ``cara.last_batch`` (DESIGN.md "Batch store" order)."""
    with managed(store, registry, lock_timeout):
        return _step(store, registry, options, on_phase)


def steps(store: BatchStore, registry: reg.Registry, options: StepOptions = StepOptions(), *,
          lock_timeout: float = DEFAULT_LOCK_TIMEOUT, on_phase: Phase = no_phase) -> Iterator[StepResult]:
    """Every pending batch in order, under one lock: each result as soon as its batch is done.

    Ends after the first result that is not a processed batch (waiting, nothing to do, dry run).
    """
    with managed(store, registry, lock_timeout):
        while True:
            result = _step(store, registry, options, on_phase)
            yield result
            if result.status != "processed":
                return


def _step(store: BatchStore, registry: reg.Registry, options: StepOptions, on_phase: Phase) -> StepResult:
    dry_run, force_retrain, cooldown = options.dry_run, options.force_retrain, options.cooldown
    doc = active_policy(registry)
    last = registry.last_batch()
    if last is None:
        raise SetupError(f"model {registry.name!r} is not initialised in "
                                f"{registry.where}: run `cara-mlflow init --batch ID` first")
    info = store.next_after(last)
    if info is None:
        if not dry_run:
            _recover(registry, last, None)
            _write_timeline(registry, store, last)
        return StepResult("nothing", message=f"nothing to do: batch {last} is the last one in {store.batches_dir}")
    if not info.complete:
        return StepResult("waiting", info.id, message=f"waiting for batch {info.id} (no _SUCCESS yet)")
    batch = _batch_for(store, info.id, doc)               # malformed: fails here, nothing written
    on_phase("after-read")
    if not dry_run:
        _recover(registry, last, info.id)
        _write_timeline(registry, store, last)
    state = _committed_state(registry, last)
    production = registry.production()
    resumed = production.trained_on is not None and production.trained_on >= info.id
    in_use = registry.version(state["model_version"]) if resumed else production
    policy = policy_from_dict(state["policy"])
    if (state["policy"]["policy"], state["policy"]["params"]) != (doc["policy"], doc["params"]):
        policy = make_policy(doc["policy"], **doc["params"])   # re-tuned since: start afresh
    elif not resumed and state.get("model_version") != production.version:
        policy.reset(info.id)                                  # production moved by hand (rollback)
    kappa = float(doc["kappa"])
    with tempfile.TemporaryDirectory() as tmp:
        model = registry.load_model(in_use, tmp)
        training, rows = registry.training_info(in_use, tmp)
    gamma = float(doc["psi"]["gamma"])
    method = options.psi_method or doc["psi"].get("method", "exact")
    now, then, errors = _psi_terms(model, batch, training, rows, gamma, method)
    psi_bar = now - then
    on_phase("after-psi")
    trained_on = in_use.trained_on if in_use.trained_on is not None and in_use.trained_on < info.id else info.id - 1
    decision = policy.decide(Observation(t=info.id, trained_on=trained_on, psi_bar=psi_bar,
                                         errors=errors.astype(np.int8), kappa=kappa))
    cooling = state.get("cooldown_until") is not None and info.id <= state["cooldown_until"]
    retrain = resumed or force_retrain or (decision.retrain and not cooling)
    reason = ("resuming a promotion that landed before a crash" if resumed else
              "forced by --force-retrain" if force_retrain else
              f"{decision.reason}; cooling down until batch {state['cooldown_until']}" if decision.retrain and cooling
              else decision.reason)
    if retrain and not resumed and np.unique(batch.y).size < 2:
        raise InputError(f"batch {info.id}: column {batch.target!r} holds one class ({batch.y[0]!r}) only: a "
                         "model retrained on it would predict that label for everything; fix the batch, "
                         f"or skip it with `cara-mlflow skip --batch {info.id}`")
    if dry_run:
        return StepResult("dry-run", info.id, psi_bar, "retrain" if retrain else "keep", reason,
                          production.version, None, state["cumulative_cost"])
    with _batch_run(registry, store, info.id, {}, previous=last) as run_id:
        registry.runs.log_metrics(run_id, {"psi_bar": psi_bar, "psi_now": now, "psi_then": then, "kappa": kappa,
                                      "n_data": batch.n_rows, "n_queries": len(batch.queries)})
        on_phase("after-batch-run")
        gate_outcome = None
        version = production.version
        if retrain:
            trigger = "manual" if force_retrain else doc["policy"]
            challenger = _train_and_register(store, registry, info.id, doc, TrainerSettings(**doc["trainer"]),
                                             options.project_uri, trigger=trigger, on_phase=on_phase)
            gate_outcome = challenger.tags.get(reg.TAG_GATE) or _gate(registry, challenger, in_use, batch,
                                                                      gamma, enabled=options.gate, method=method)
            registry.tag_version(challenger.version, reg.TAG_GATE, gate_outcome)
            on_phase("after-gate")
            if gate_outcome in ("passed", "off"):
                registry.set_production(challenger.version)
                on_phase("after-alias")
                policy.reset(info.id)
                version = challenger.version
                state["cooldown_until"] = None
            else:
                state["cooldown_until"] = info.id + cooldown
            state["last_retrain"] = {"batch": info.id, "version": challenger.version, "gate": gate_outcome}
            state["cumulative_cost"] += kappa
        else:
            state["cumulative_cost"] += psi_bar
        state["policy"] = policy.to_dict()
        state["model_version"] = version
        action = "retrain" if retrain else "keep"
        gate_tag = {reg.TAG_GATE: gate_outcome} if gate_outcome else {}
        registry.runs.set_tags(run_id, {reg.TAG_DECISION: action, reg.TAG_MODEL_VERSION: version,
                                        "cara.reason": reason[:500], **gate_tag})
        registry.runs.log_metrics(run_id, {"decision": float(retrain), "cumulative_cost": state["cumulative_cost"],
                                      "score": decision.score})
        _commit(registry, run_id, info.id, state, on_phase)
    return StepResult("processed", info.id, psi_bar, action, reason, version, gate_outcome, state["cumulative_cost"])


def _gate(registry, challenger, in_use, batch, gamma, *, enabled: bool, method: str = "exact") -> str:
    """Promote only if the challenger's query-weighted loss on its held-out rows is not higher.

    Both sides use the same seed (common random blocks), so an estimate's error mostly cancels
    in the comparison."""
    if not enabled:
        return "off"
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(challenger, tmp)
        held = np.asarray(info.get("holdout_index") or [], dtype=np.int64)
        if held.size == 0:
            return "passed"
        new_model = registry.load_model(challenger, tmp)
        old_model = registry.load_model(in_use, tmp)
    X, y = batch.X[held], batch.y[held]
    new = psi_from_losses(batch.queries, X, zero_one_loss(y, new_model.predict(X)), gamma, method=method,
                          seed=(batch.id, 2))
    old = psi_from_losses(batch.queries, X, zero_one_loss(y, old_model.predict(X)), gamma, method=method,
                          seed=(batch.id, 2))
    return "passed" if new <= old else "rejected"


# ---------------------------------------------------------------------------- skip, rollback


def skip(store: BatchStore, registry: reg.Registry, *, batch_id: int, reason: str,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> StepResult:
    """Record the next pending batch as skipped (decision ``skip``) and commit past it."""
    validate.reason(reason, "the batch is skipped")
    with managed(store, registry, lock_timeout):
        return _skip(store, registry, batch_id, reason)


def _skip(store, registry, batch_id: int, reason: str) -> StepResult:
    last = registry.last_batch()
    if last is None:
        raise SetupError(f"model {registry.name!r} is not initialised: run `cara-mlflow init` first")
    info = store.next_after(last)
    if info is None or info.id != batch_id:
        expected = "none is pending" if info is None else f"the next pending batch is {info.id}"
        raise InputError(f"batch: only the next pending batch can be skipped; {expected}, got {batch_id}")
    _recover(registry, last, batch_id)
    state = _committed_state(registry, last)
    tags = {reg.TAG_DECISION: "skip", reg.TAG_MODEL_VERSION: state["model_version"], "cara.reason": reason[:500]}
    with _batch_run(registry, store, batch_id, tags, previous=last) as run_id:
        registry.runs.log_metrics(run_id, {"cumulative_cost": state["cumulative_cost"], "decision": 0.0})
        _commit(registry, run_id, batch_id, state)
    return StepResult("processed", batch_id, None, "skip", reason, state["model_version"], None,
                      state["cumulative_cost"])


def rollback(store: BatchStore, registry: reg.Registry, *, reason: str, to_version: int | None = None,
             lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> tuple[int | None, int]:
    """Move production back (default: the previous version that passed its gate); returns (from, to).

    With ``to_version`` it also puts back a production alias that was deleted by hand (from = None).
    """
    validate.reason(reason, "production is rolled back")
    with managed(store, registry, lock_timeout):
        return _rollback(registry, reason, to_version)


def _rollback(registry, reason: str, to_version: int | None) -> tuple[int | None, int]:
    try:
        current = registry.production()
    except SetupError:
        if to_version is None:
            raise
        current = None
    if to_version is None:
        # Only versions that were fit to serve: gated and passed, or promoted without a gate
        # (init, adopt, --no-gate). A version a killed step registered but never gated is not one.
        candidates = [v for v in registry.versions() if v.version < current.version
                      and v.tags.get(reg.TAG_GATE) in ("passed", "off") and v.trained_on is not None]
        if not candidates:
            raise InputError(f"to: no version before v{current.version} to roll back to; pass --to VERSION")
        target = candidates[0]
    else:
        target = registry.version(to_version)
        if target.trained_on is None:
            raise InputError(f"to: version {to_version} was not trained or adopted by cara-mlflow "
                             f"(no {reg.TAG_TRAINED_ON} tag); adopt it with `init --adopt-version`")
    if current is not None and target.version == current.version:
        raise InputError(f"to: version {target.version} is already in production")
    registry.set_production(target.version)
    before = f"v{current.version}" if current is not None else "no alias"
    registry.set_model_tag(reg.TAG_ROLLBACK, f"{before} -> v{target.version}: {reason}"[:5000])
    if current is not None:
        registry.tag_version(current.version, "cara.rolled_back", reason[:500])
    return (current.version if current is not None else None), target.version


# ---------------------------------------------------------------------------- status, history


def history(registry: reg.Registry) -> list[dict]:
    """The decision table: one row per committed batch, in batch order."""
    registry.check_reachable()
    rows = []
    for run in registry.runs.find("batch", statuses=("FINISHED",), max_results=50000):
        tags, metrics = run.tags, run.metrics
        rows.append({"batch": int(tags[reg.TAG_BATCH]), "decision": tags.get(reg.TAG_DECISION),
                     "psi_bar": metrics.get("psi_bar"), "cumulative_cost": metrics.get("cumulative_cost"),
                     "version": int(tags[reg.TAG_MODEL_VERSION]) if tags.get(reg.TAG_MODEL_VERSION) else None,
                     "gate": tags.get(reg.TAG_GATE), "reason": tags.get("cara.reason", ""),
                     "run_id": run.run_id})
    return sorted(rows, key=lambda r: r["batch"])


def status(store: BatchStore, registry: reg.Registry, *, ui_base: str = "http://127.0.0.1:5000") -> dict:
    """Where the managed model stands: production, batches, policy, costs and UI links."""
    registry.check_reachable()
    out: dict = {"name": registry.name, "tracking_uri": registry.where,
                 "store": str(store.root)}
    production = registry.production()
    last = registry.last_batch()
    out["production"] = {"version": production.version, "trained_on": production.trained_on,
                         "alias": registry.production_alias}
    out["last_batch"] = last
    nxt = store.next_after(last) if store.exists() else None
    if nxt is None:
        out["next_batch"] = None
        out["next_state"] = "none pending"
    else:
        out["next_batch"] = nxt.id
        if not nxt.complete:
            out["next_state"] = "waiting"
        else:
            try:
                doc = active_policy(registry)
                _batch_for(store, nxt.id, doc)
                out["next_state"] = "ready"
            except InputError as exc:
                out["next_state"] = f"malformed: {exc}"
    doc = active_policy(registry)
    out["policy"] = {"name": doc["policy"], "params": doc["params"], "kappa": doc["kappa"],
                     "version": doc.get("_version")}
    if last is not None:
        state = _committed_state(registry, last)
        out["cumulative_cost"] = state["cumulative_cost"]
        out["last_retrain"] = state.get("last_retrain")
        out["cooldown_until"] = state.get("cooldown_until")
    out["ui"] = registry.ui_links(ui_base.rstrip("/"))
    return out
