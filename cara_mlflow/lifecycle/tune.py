"""``tune``: a model per offline batch, the offline cost matrix, θ* — registered as ``NAME.policy@active``."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import validate
from ..backends import Backend
from ..errors import InputError, SetupError
from ..features import infer_task
from ..guards import Guards
from ..kappa_scale import kappa_advice
from ..losses import TASKS, check_loss_name, default_loss
from ..money import MEASURED_WINDOW, Money
from ..names import DEFAULT_LOCK_TIMEOUT, DEFAULT_POLICY, DEFAULT_PSI_METHOD, DEFAULT_TUNING_METHOD
from ..oracle import solve
from ..planner import SchemaChange
from ..policies import POLICIES
from ..policy_doc import PolicyDocument, PsiSettings
from ..staleness import DEFAULT_PSI_SCALE, check_psi_method, check_psi_scale, resolve_gamma, similarity_spread
from ..store import BatchStore, read_window, window_ids
from ..tracking import registry as reg
from ..tracking.projects import check_backend, resolve_project_uri
from ..train import TrainerSettings, fit_batch
from ..tuning import PolicyTuner
from ..verify import VERIFY_MARGIN
from . import training
from .frame import active_policy, default_project_uri, managed
from .offline_terms import offline_terms
from .pool import check_pool, check_units, pool_matrices, pool_warnings, read_pool
from .training import train_on_batch, training_seconds

__all__ = ["tune", "QUERY_RULE"]

QUERY_RULE = "queries file of the batch if present, else the batch's own data points"


def tune(store: BatchStore, registry: reg.Registry, *, offline: tuple[int, int], kappa: float | None = None,
         policy: str = DEFAULT_POLICY, target: str = "label", trainer: TrainerSettings | None = None,
         gamma="scale", method: str = DEFAULT_TUNING_METHOD, project_uri: str | None = None,
         psi_method: str = DEFAULT_PSI_METHOD, progress: Callable[[int, int], None] | None = None,
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT, features: Sequence[str] | None = None,
         exclude: Sequence[str] = (), task: str | None = None, loss: str | None = None,
         guards: Guards | None = None, psi_scale: str | None = None, money: Money | None = None,
         notify: dict | str | None = None, verify_margin: float | str | None = None,
         decide_before_labels: bool | None = None, backend: Backend | None = None,
         pool: Sequence[str] = ()) -> PolicyDocument:
    """Train a model per offline batch, build the cost matrix, tune θ*, register ``policy.json``.

    The features (``features``, else every column but the target, minus ``exclude``), their
    kinds, the task (inferred from the offline targets unless given), the loss (the task's
    default unless given) and the kernel space are fixed here and stored in the document.
    ``psi_method`` (:data:`~cara_mlflow.names.PSI_METHODS`) computes the offline Ψ̄ and is stored
    in the document as the default of every later step. Returns the policy document (also stored
    as ``NAME.policy@active``), with its registered version; ``doc.tuning["notes"]`` says what
    was inferred and warns of a degenerate kernel. ``guards`` (:mod:`cara_mlflow.guards`) are
    stored in the document for every later step. ``psi_scale`` fixes the unit of Ψ̄ and κ
    (:data:`~cara_mlflow.staleness.PSI_SCALES`; a note says which): by default ``paper`` when κ
    is given, ``expected-loss`` when it comes from ``money`` (κ = retrain cost ÷ error cost,
    the retrain cost fixed or priced from the offline trainings' wall times). ``notify``
    (``{command, timeout}``, :mod:`cara_mlflow.notify`) and ``verify_margin`` (the check after a
    promotion, :mod:`cara_mlflow.verify`) are stored for every later step; ``"off"`` stores none.
    ``decide_before_labels``: ``step`` acts on a batch's queries before its labels (``_QUERIES``),
    on an estimated Ψ̄ it reconciles when the labels land (:mod:`cara_mlflow.estimate`).
    ``backend`` (:mod:`cara_mlflow.backends`) is where every later retrain runs (offline models
    train here, in this process or through the project's local run).
    ``guards``, ``notify``, ``verify_margin``, ``decide_before_labels`` and ``backend`` left None keep the active
    policy's (a re-tune from cron does not drop them; a note says so), or the defaults on a first tune.
    ``pool`` names other models of the same process whose offline windows join the threshold's tuning
    (:mod:`cara_mlflow.lifecycle.pool`); a tuning input like κ, given at each tune.
    """
    check_psi_method(psi_method)
    if (kappa is None) == (money is None):
        raise InputError("kappa: give --kappa K, or the money it stands for (--retrain-cost and --error-cost), "
                         "not both")
    psi_scale = check_psi_scale(psi_scale or ("expected-loss" if money else DEFAULT_PSI_SCALE))
    validate.policy_name(policy, tunable=True)
    if decide_before_labels:
        validate.decides_before_labels(policy)
    untuned = policy in UNTUNED
    if untuned and money is not None and money.measured:
        raise InputError(f"retrain-cost: `measured` prices timed trainings, and --policy {policy} trains no offline "
                         "model; give a fixed --retrain-cost AMOUNT (re-tune with `measured` once history exists)")
    kappa = None if kappa is None else validate.kappa(kappa)
    if loss is not None:
        check_loss_name(loss)
    project_uri = resolve_project_uri(project_uri) if project_uri else None
    if backend is not None:
        check_backend(backend)
    pool = check_pool(pool, registry.name, policy)
    with managed(store, registry, lock_timeout):
        pooled = read_pool(registry, pool)
        offline = resolve_window(store, offline, minimum=1 if untuned else 2)
        kept, kept_notes = _kept_settings(registry, guards, notify, verify_margin, decide_before_labels, backend,
                                          pooled=bool(pooled))
        if kept["decide_before_labels"] and not POLICIES[policy].from_costs():
            raise InputError(f"decide-before-labels: the active policy decides before labels, which {policy} "
                             "cannot (it watches the errors of labelled rows); add --wait-for-labels to re-tune "
                             f"with {policy}")
        batches, draft, notes = _draft(store, registry, offline, target, features, exclude, task, loss, gamma,
                                       replace(_SETTINGS, policy=policy, kappa=kappa or 1.0, trainer=trainer or
                                               TrainerSettings(), project_uri=project_uri, **kept,
                                               psi=PsiSettings(0.0, method=psi_method, scale=psi_scale)))
        notes += kept_notes
        if untuned:
            return _register_untuned(registry, replace(draft, kappa=kappa or money.kappa(()), money=money), notes)
        check_units(pooled, draft)        # said before any model is trained
        models, seconds = _offline_models(registry, batches, draft, progress,
                                          timed=money is not None and money.measured)
        if money is not None:
            draft = replace(draft, kappa=money.kappa(seconds), money=money, training_seconds=tuple(seconds))
            notes += _money_notes(draft, seconds)
        terms, sample_notes = offline_terms(batches, models, draft, method=psi_method, scale=psi_scale,
                                            seed=offline[0])
        notes += sample_notes
        C = terms.cost_matrix(draft.kappa)
        pool_windows = pool_matrices(pooled, draft)                 # re-priced at κ, known by now
        queries = float(np.median([b.n_queries for b in batches]))
        notes += pool_warnings(pooled, draft, queries)
        # CARA-P's t counts batches from the window's first (0), as step's position does: ids may have gaps
        tuned, best = PolicyTuner(policy, method=method, start=0).fit(C, pool=pool_windows), solve(C)
        advice = kappa_advice(terms.psi_bar, draft.kappa, policy, tuned.result_.n_retrains, best.n_retrains)
        notes += [f"guard rails: {draft.guards.describe()}"] if draft.guards.any else []
        doc = _document(draft, tuned, best, method, notes + list(advice.notes) + _pool_notes(pooled, tuned, C),
                        [b.id for b in batches], advice, pooled, queries)
        return _register_tuned(registry, doc, C, tuned, best)


def _kept_settings(registry: reg.Registry, guards: Guards | None, notify, verify_margin,
                   decide_before_labels: bool | None = None, backend: Backend | None = None,
                   pooled: bool = False) -> tuple[dict, list[str]]:
    """The guard rails, notify command, verify margin and decide-before-labels of a (re-)tuned policy:
    those given (``"off"``: none), else the active policy's, else the defaults; and a note naming
    what was kept (and one if the active policy was tuned with a pool that this tune lacks)."""
    try:
        previous = active_policy(registry)
    except (SetupError, InputError):       # a first tune, or an active policy that cannot be read
        previous = None
    dropped = [] if pooled or previous is None else [w["name"] for w in (previous.tuning or {}).get("pool", [])]
    kept = []
    if guards is None and previous is not None and previous.guards.any:
        kept.append("its guard rails")
    if notify is None and previous is not None and previous.notify:
        kept.append("its notify command")
    if verify_margin is None and previous is not None and previous.verify_margin != VERIFY_MARGIN:
        kept.append("its verify margin")
    if decide_before_labels is None and previous is not None and previous.decide_before_labels:
        kept.append("its decisions before labels")
    if backend is None and previous is not None and not previous.backend.is_default:
        kept.append(f"its retrain backend ({previous.backend.describe()})")
    settings = {"guards": guards if guards is not None else previous.guards if previous else Guards(),
                "notify": None if notify == "off" else notify if notify is not None else
                previous.notify if previous else None,
                "verify_margin": None if verify_margin == "off" else verify_margin if verify_margin is not None else
                previous.verify_margin if previous else VERIFY_MARGIN,
                "decide_before_labels": bool(decide_before_labels if decide_before_labels is not None else
                                             previous.decide_before_labels if previous else False),
                "backend": backend if backend is not None else previous.backend if previous else Backend()}
    notes = [f"kept from the active policy v{previous.version}: {', '.join(kept)} (give the options to change them, "
             "off to drop them)"] if kept else []
    notes += [f"the active policy v{previous.version} was tuned with --pool {','.join(dropped)}; this tune pools "
              "nothing (give --pool again to keep it)"] if dropped else []
    return settings, notes


#: Policies ``tune`` registers without offline models: nothing to tune, the window fixes only the
#: features, their kinds, the task and the kernel (one batch is enough: a team starts on day one).
UNTUNED = ("rent",)

# the settings a draft starts from (tune replaces each)
_SETTINGS = PolicyDocument(name="", policy="nr", params={}, kappa=1.0, psi=PsiSettings(1.0), target="",
                           features=(), trainer=None)


def resolve_window(store: BatchStore, offline, *, minimum: int = 2) -> tuple[int, int]:
    """The offline window as ``(start, stop)`` ids: given, ``last:N`` (the N latest complete
    batches: a weekly re-tune on recent history), ``all`` (every complete batch: a re-tune on the
    growing history), or None (``minimum`` 1: the first complete batch; else ``0:25``).
    :class:`InputError` when the store holds too few."""
    spec = validate.offline_spec(offline) if offline is not None else None
    if isinstance(spec, validate.Latest) or (spec is None and minimum == 1):
        ids = [info.id for info in store.list() if info.complete]
        if spec is not None and spec.n is None:
            if len(ids) < minimum:
                raise InputError(f"offline: all is {len(ids)} complete batch{'es' if len(ids) != 1 else ''} in "
                                 f"{store.batches_dir}; expected at least {minimum} (re-run once more have landed)")
            return ids[0], ids[-1] + 1
        want = spec.n if spec is not None else 1
        if want < minimum:
            raise InputError(f"offline: last:{want} is too few to tune on; expected at least last:{minimum}")
        if len(ids) < want:
            raise InputError(f"offline: {'last:' + str(want) if spec else 'a first batch'} needs {want} complete "
                             f"batch{'es' if want != 1 else ''}; {store.batches_dir} has {len(ids)} (re-run once "
                             "more have landed)")
        return ids[-want] if spec else ids[0], (ids[-1] if spec else ids[0]) + 1
    window = spec or (0, 25)
    window_ids(store, window, minimum=minimum)
    return window


def _draft(store, registry, offline, target, features, exclude, task, loss, gamma, base: PolicyDocument):
    """The offline batches, the document before tuning (features, kinds, task, loss, kernel), and
    the notes that say what was found and inferred."""
    batches, space, found = _offline_batches(store, offline, target, features, exclude)
    task, notes = _task(batches, target, task)
    notes.insert(0, found)
    notes += _schema_notes(registry, space.features)
    loss = loss or default_loss(task)
    g = resolve_gamma(gamma, np.concatenate([b.X for b in batches]))
    notes += _kernel_notes(batches, g) + _identifier_notes(batches, space)
    psi = PsiSettings(g, loss, base.psi.method, QUERY_RULE, space, base.psi.scale)
    notes.append(units_note(base.psi.scale, loss))
    return batches, replace(base, name=registry.name, psi=psi, target=target, features=space.features,
                            offline=offline, task=task), notes


def _money_notes(doc: PolicyDocument, seconds: list[float]) -> list[str]:
    notes = [_money_note(doc.money, seconds, doc.kappa, "wrong answers" if doc.psi.loss == "zero_one" else "losses")]
    if doc.psi.scale == "paper":
        notes.append("warning: κ from money counts query errors, but --psi-scale paper measures Ψ̄ in the "
                     "paper's units (off by the kernel's mass near the queries); use --psi-scale expected-loss")
    return notes


def _register_untuned(registry: reg.Registry, draft: PolicyDocument, notes: list[str]) -> PolicyDocument:
    """A policy with nothing to tune: no offline model, no matrix; registered as it is."""
    notes = notes + ([_money_notes(draft, [])[0]] if draft.money else [])
    notes.append(f"{draft.policy}: nothing to tune and no offline model trained; the window fixed the features, "
                 "their kinds, the task and the kernel. Re-tune a tuned policy once history exists")
    notes += [f"guard rails: {draft.guards.describe()}"] if draft.guards.any else []
    doc = replace(draft, tuning={"method": "none", "notes": notes})
    return _register(registry, doc, {"kappa": doc.kappa, "gamma": doc.psi.gamma})


def units_note(scale: str, loss: str) -> str:
    """Which unit Ψ̄ and κ are in (``tune`` prints it).

    >>> units_note("expected-loss", "zero_one").split(":")[1]
    ' Ψ̄ and κ in expected query losses (psi scale expected-loss)'
    """
    if scale == "expected-loss":
        what = "wrong answers" if loss == "zero_one" else f"units of {loss} loss"
        return (f"units: Ψ̄ and κ in expected query losses (psi scale expected-loss): κ = 20 means one retrain is "
                f"worth 20 {what} among a batch's queries")
    return ("units: Ψ̄ and κ in the paper's units (psi scale paper: similarity-weighted losses near the queries, "
            "per data row); --psi-scale expected-loss counts expected query losses instead")


def _offline_batches(store: BatchStore, offline: tuple[int, int], target: str, features, exclude):
    """The complete batches whose id lies in the window (ids may have gaps), with the chosen
    features, in the kernel space fitted on them; and the note that says how many were found."""
    ids = window_ids(store, offline, minimum=1)
    batches, space = read_window(store, ids, target=target, features=features, exclude=exclude)
    note = f"offline window {offline[0]}:{offline[1]}: {len(ids)} complete batches ({ids[0]} … {ids[-1]})"
    return batches, space, note


def _schema_notes(registry: reg.Registry, features: tuple[str, ...]) -> list[str]:
    """A note when the re-tune's features differ from production's: the next step retrains."""
    if registry.last_batch() is None:
        return []
    production = registry.production()
    with tempfile.TemporaryDirectory() as tmp:
        info, _ = registry.training_info(production, tmp)
    change = SchemaChange.between(tuple(info.get("features", ())), tuple(features))
    if change is None:
        return []
    return [f"{change.describe()}: production v{production.version} cannot be scored on them; the next step "
            "retrains on the new features (trigger schema, no gate), and the policy goes on from that model"]


def _task(batches, target: str, task: str | None) -> tuple[str, list[str]]:
    """The task, given or inferred from the offline targets, and the note that says which."""
    if task is not None:
        if task not in TASKS:
            raise InputError(f"--task: expected {' or '.join(TASKS)}, got {task!r}")
        return task, [f"task: {task} (given)"]
    inferred, why = infer_task(np.concatenate([b.y for b in batches]))
    return inferred, [f"task: {inferred}, inferred from the target {target!r} ({why}); --task overrides"]


def _kernel_notes(batches, gamma: float) -> list[str]:
    """A warning when the kernel is degenerate on the offline window."""
    zero, one = similarity_spread(np.concatenate([b.queries for b in batches]),
                                  np.concatenate([b.X for b in batches]), gamma)
    if zero > 0.95:
        return [f"warning: the kernel is degenerate on the offline window: {zero:.0%} of similarities are ≈ 0 "
                "(γ too large for these features): Ψ̄ sees only near-duplicates of the queries"]
    if one > 0.95:
        return [f"warning: the kernel is degenerate on the offline window: {one:.0%} of similarities are ≈ 1 "
                "(γ too small): Ψ̄ is a plain loss count, not weighted near the queries"]
    return []


def _identifier_notes(batches, space) -> list[str]:
    """A warning for each whole-number or text feature with a different value on every offline row:
    an identifier, which the kernel and the model would take for a signal."""
    notes = []
    for name, kind in zip(space.features, space.kinds):
        if not (kind == "categorical" or pd.api.types.is_integer_dtype(batches[0].frame[name].dtype)):
            continue
        column = pd.concat([b.frame[name] for b in batches], ignore_index=True)   # this column only
        if len(column) >= 50 and column.nunique() == len(column):
            notes.append(f"warning: feature {name!r} has a different value on every row of the offline window: "
                         f"an identifier? leave it out with --exclude {name}")
    return notes


def _offline_models(registry, batches, doc: PolicyDocument, progress, *,
                    timed: bool = False) -> tuple[list, list[float]]:
    """Each offline batch's model, and each training's wall time: models trained in-process, or
    through the retrain project — the user's, or with ``timed`` (a measured retrain cost) ours — as
    retrains will be, and timed as they will be: from the run's start until its model is logged."""
    models, seconds = [], []
    project = doc.project_uri or (default_project_uri() if timed else None)
    for k, batch in enumerate(batches):
        if project:
            run_id = train_on_batch(registry, batch, doc, project, run_type="tune-train")
            seconds.append(training_seconds(registry, run_id))
            with tempfile.TemporaryDirectory() as tmp:
                models.append(registry.load_model_uri(registry.model_of_run(run_id), tmp))
        else:
            started = training.clock()
            models.append(fit_batch(batch.frame, batch.y, doc.trainer, task=doc.task, kinds=doc.feature_kinds).model)
            seconds.append(max(training.clock() - started, 1e-6))
        if progress:
            progress(k + 1, len(batches))
    return models, seconds


def _money_note(money: Money, seconds: list[float], kappa: float, unit: str) -> str:
    """What κ the money gave, and from what."""
    if not money.measured:
        return f"κ = {kappa:.4g} {unit} per retrain ({money.describe()})"
    recent = seconds[-MEASURED_WINDOW:]
    return (f"κ = {kappa:.4g} {unit} per retrain at first: the median offline training time "
            f"{np.median(recent):.3g} s (of the last {len(recent)}) × {money.price_per_hour:g}/hour ÷ error cost "
            f"{money.error_cost:g}; each step re-prices it from the last {MEASURED_WINDOW} retrains")


def _document(draft: PolicyDocument, tuned, best, method: str, notes: list[str], ids: list[int],
              advice, pooled=(), queries_per_batch: float | None = None) -> PolicyDocument:
    """The tuned document; its figures name batches by id (the window's ids may have gaps). Pooled,
    ``offline_cost`` stays this window's, ``pooled_cost`` is the sum the threshold minimised."""
    own = tuned.result_.details["own_cost"] if pooled else tuned.best_cost_
    pool = {"pool": [w.describe() for w in pooled], "pooled_cost": tuned.best_cost_} if pooled else {}
    figures = {"method": method, "offline_cost": own, "oracle_cost": best.cost, **pool,
               "queries_per_batch": queries_per_batch,
               "oracle_retrain_at": [ids[t] for t in best.retrain_at[1:]],
               "strategy": [ids[s] for s in tuned.best_strategy_], "interval": tuned.result_.interval,
               "offline_retrains": tuned.result_.n_retrains, "oracle_retrains": best.n_retrains,
               "psi_bar_offline": dict(zip(("q05", "median", "q95"), advice.psi_bar_quantiles)),
               "kappa_oracle_always": advice.oracle_always, "kappa_oracle_never": advice.oracle_never,
               "notes": notes}
    return replace(draft, params=dict(tuned.best_params_), tuning=figures)


def _pool_notes(pooled, tuned, C: np.ndarray) -> list[str]:
    """What the pool did: the summed and own costs, and the threshold this window alone would give."""
    if not pooled:
        return []
    names = ", ".join(f"{w.name} (v{w.version}, {w.costs.shape[0]} batches)" for w in pooled)
    alone = PolicyTuner(tuned.policy, method=tuned.method, seed=tuned.seed, kappa_relative=tuned.kappa_relative)
    name = POLICIES[tuned.policy].tunable[0]
    return [f"pooled history: the threshold minimises the offline cost summed over this window and {names}, "
            f"each re-priced at this κ: {tuned.best_cost_:.4g} in all, {tuned.result_.details['own_cost']:.4g} "
            f"here; {name}={tuned.best_params_[name]:.4g} (this window alone: {alone.fit(C).best_params_[name]:.4g})"]


def _register_tuned(registry: reg.Registry, doc: PolicyDocument, C: np.ndarray, tuned, best) -> PolicyDocument:
    """The tuning run with its figures, the matrix and its heat map; then ``NAME.policy@active``."""
    metrics = {"offline_cost": doc.tuning["offline_cost"], "pooled_cost": doc.tuning.get("pooled_cost"),
               "oracle_cost": best.cost, "kappa": doc.kappa,
               "gamma": doc.psi.gamma, "offline_retrains": tuned.result_.n_retrains,
               "oracle_retrains": best.n_retrains, "kappa_oracle_never": doc.tuning["kappa_oracle_never"],
               "kappa_oracle_always": doc.tuning["kappa_oracle_always"]}
    return _register(registry, doc, metrics, lambda run_id: _log_tuning_artifacts(
        registry, run_id, C, doc, tuned.best_strategy_, best.strategy))


def _register(registry: reg.Registry, doc: PolicyDocument, metrics: dict,
              artifacts: Callable[[str], None] = lambda run_id: None) -> PolicyDocument:
    """The tuning run (params, ``metrics``, ``artifacts``), then ``NAME.policy@active``."""
    run_id = registry.runs.start("tune", run_name=f"tune-{doc.policy}-kappa{doc.kappa:.4g}")
    try:
        registry.runs.log_params(run_id, _params(doc))
        registry.runs.log_metrics(run_id, {k: v for k, v in metrics.items() if v is not None and v == v})
        artifacts(run_id)
        registry.runs.log_dict(run_id, doc.to_dict(), reg.POLICY_FILE)
        version = registry.register_policy(doc.to_dict(), run_id)
        registry.runs.end(run_id, "FINISHED")
    except BaseException:
        registry.runs.end(run_id, "FAILED")
        raise
    return replace(doc, version=version)


def _params(doc: PolicyDocument) -> dict:
    return {"policy": doc.policy, "kappa": doc.kappa, "gamma": doc.psi.gamma,
            "offline": f"{doc.offline[0]}:{doc.offline[1]}", "target": doc.target, "task": doc.task,
            "loss": doc.psi.loss, "psi_scale": doc.psi.scale, "features": ",".join(doc.features),
            **{f"theta.{k}": v for k, v in doc.params.items()},
            **({"guards": doc.guards.describe()} if doc.guards.any else {}),
            **({"money": doc.money.describe()} if doc.money else {}),
            **({"pool": ",".join(w["name"] for w in doc.tuning["pool"])} if (doc.tuning or {}).get("pool") else {}),
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
