"""The ``cara-mlflow`` command line: thin click adapters over the library.

Each command parses its options, calls one library function and prints the result. Errors are
mapped here, at the edge, and only ours (:mod:`cara_mlflow.errors`): one line on stderr and the
exit code of their kind (1, or 75 for a busy lock or an unreachable tracking server). Any other
exception is a bug: it reaches the terminal with its traceback, exit 1. Heavy imports (numpy's
users, scikit-learn, mlflow) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from . import jsonout
from .cli_options import (
    SINGLE_SCHEDULER,
    backend_options,
    checked,
    column_options,
    guard_options,
    json_option,
    kappa_option,
    kappa_schedule_option,
    lock_timeout_option,
    loss_option,
    managed,
    model_option,
    money_options,
    notify_options,
    policies_option,
    project_uri_option,
    psi_method_option,
    tuning_method_option,
    verify_margin_option,
)
from .errors import EXIT_ERROR, CaraError, InputError, RetryLater
from .names import DEFAULT_COOLDOWN, DEFAULT_POLICY
from .staleness import PSI_SCALES
from .streams import STREAM_NAMES
from .validate import decides_before_labels, offline_spec, offline_window, tunable_policies

KAPPA_HELP = ("What one retrain is worth (κ > 0), in the units of Ψ̄: the paper's (similarity-weighted losses near "
              "the queries, per data row) by default, expected wrong answers with --psi-scale expected-loss.")


def label_delay_option():
    """``--label-delay L`` of simulate and compare (0: labels at once, the paper's convention)."""
    return click.option("--label-delay", "label_delay", default=0, show_default=True, type=click.IntRange(min=0),
                        metavar="L", help="Labels land L batches late: run each policy (a) waiting for them and "
                        "(b) deciding on estimated Ψ̄, reconciled when they land, against the ORACLE and the "
                        "delay-constrained ORACLE. 0: labels at once.")


def retune_every_option():
    """``--retune-every N`` of simulate and compare (0: each policy tuned once, the paper's convention)."""
    return click.option("--retune-every", "retune_every", default=0, show_default=True, type=click.IntRange(min=0),
                        metavar="N", help="Also run cara-t and cara-ct re-tuned every N online batches on the "
                        "history seen so far (the offline window plus the online batches before), as "
                        "cara-t-retuneN: at high κ one offline window holds too few retrains to tune on "
                        "(benchmarks/results/beyond.md); in production, `tune --offline all` from cron. "
                        "0: tuned once.")


def _error_line(exc: CaraError) -> str:
    prefix = "cara-mlflow: " if isinstance(exc, RetryLater) else "cara-mlflow: error: "
    return prefix + exc.line()


class _Commands(click.Group):
    """The command group; our errors end a command with one line and their exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CaraError as exc:
            click.echo(_error_line(exc), err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cara-mlflow")
def cli():
    """cara-mlflow: decide when to retrain a production model, at the lowest total cost.

    Each batch of labelled data and queries gives a staleness cost Ψ̄ (how much
    worse the current model got near the queries); a retrain costs κ in the same
    units. A policy tuned offline on history decides Keep or Retrain.

    Exit codes: 0 done (or nothing to do, and it says which); 1 bad input or
    environment (one line: what and how to fix), or a bug (with its traceback);
    75 another step holds the lock, or the tracking server or the object store
    holding the batches cannot be reached (cron may retry).
    """


def _phase_hook() -> dict:
    """``on_phase`` for the lifecycle when :func:`main` was given one (crash tests), else nothing."""
    hook = (click.get_current_context().obj or {}).get("on_phase")
    return {"on_phase": hook} if hook else {}


def _quiet_mlflow() -> None:
    """This process's MLflow settings: no telemetry, warnings only, stdout left to us."""
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # stdout is ours (one line per batch, or --json): no "🏃 View run ... at: URL" lines from MLflow
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings (a store's odd directory, a batch id off the stream's pattern) as one line on
    stderr, like our errors, rather than Python's two lines with a source path."""
    click.echo(f"cara-mlflow: warning: {message}", err=True)


def _open(name: str, store_dir: str, *, read_only: bool = False, existing: bool = True):
    """The batch store and the registry: MLFLOW_TRACKING_URI, else sqlite:///STORE/mlflow.db.

    ``existing``: a directory that is not a batch store is refused and nothing is created in it (a
    mistyped --store must not leave a database or a lock behind).
    ``read_only`` (status, history): with the embedded default, a store that has no ``mlflow.db``
    yet is refused rather than created.
    """
    _quiet_mlflow()
    from .tracking import Registry, default_artifact_root, default_tracking_uri
    from .tracking.comparison import local_artifact_root

    _check_tracking_for(store_dir)
    store = _batch_store(store_dir, existing=existing)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store.root)
    if read_only and not os.environ.get("MLFLOW_TRACKING_URI") and not (store.root / "mlflow.db").exists():
        raise InputError(f"store: no cara-mlflow store at {store.root} (no mlflow.db there); check --store "
                         "(env CARA_STORE), or set MLFLOW_TRACKING_URI to your tracking server")
    if not store.remote:
        artifacts = default_artifact_root(store.root)
    else:   # beside a sqlite file; a server (or a database URI) keeps its own artifact location
        artifacts = local_artifact_root(uri) if uri.startswith("sqlite:///") else None
    return store, Registry(uri, name, artifact_root=artifacts)


def _check_tracking_for(store_dir: str) -> None:
    """An object store cannot hold the embedded sqlite default: MLFLOW_TRACKING_URI must say where."""
    if "://" in store_dir and not store_dir.lower().startswith("file://") and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise InputError(f"store: {store_dir} is on an object store, which cannot hold the embedded sqlite tracking "
                         "store; set MLFLOW_TRACKING_URI, e.g. sqlite:////var/lib/cara/mlflow.db or "
                         "http://mlflow.internal:5000 (README, 'At scale')")


def _batch_store(store_dir: str, *, existing: bool = True):
    """The batch store alone (nothing created): a directory that is not one is refused."""
    from .store import BatchStore

    ctx = click.get_current_context(silent=True)
    store = BatchStore(store_dir, single_scheduler=bool(ctx and ctx.meta.get(SINGLE_SCHEDULER)))
    if existing and not store.exists():
        raise InputError(f"store: {store.root} is not a batch store (no {store.batches_dir.name}/ directory); "
                         "check --store (env CARA_STORE)")
    return store


def _pool_names(text: str, store: str, name: str, policy: str) -> list[str]:
    """``tune --pool``'s names, checked before the tracking store is opened (nothing is created)."""
    from .lifecycle.pool import check_pool

    pool = check_pool([n.strip() for n in text.split(",") if n.strip()], name, policy)
    local_db = _batch_store(store).root / "mlflow.db"
    if pool and not os.environ.get("MLFLOW_TRACKING_URI") and not local_db.exists():
        raise InputError(f"pool: {local_db} does not exist yet, so no other model is registered beside this one; "
                         "pooled models share one tracking store: set MLFLOW_TRACKING_URI for every store")
    return pool


def _stored_notify(command: str | None, timeout: float | None) -> dict | str | None:
    """The policy's ``notify`` from tune's options: ``{command, timeout}``, ``"off"``, or None (not
    given: the active policy's is kept). A timeout alone is refused: it would do nothing."""
    from .notify import DEFAULT_NOTIFY_TIMEOUT, check_command

    if check_command(command) is None:
        if timeout is not None:
            raise InputError("notify-timeout: it bounds the --notify command; give --notify CMD too, or drop it")
        return None if command is None else "off"
    return {"command": command, "timeout": timeout or DEFAULT_NOTIFY_TIMEOUT}


def _before_labels_lines(s: dict) -> list[str]:
    """``status``'s lines on decisions before labels: what waits for its labels, and how far the
    estimates were from the realized Ψ̄ on the last reconciled batches (how far to trust them)."""
    if not s["policy"].get("decide_before_labels"):
        return []
    waiting = s.get("provisional") or []
    lines = ["before labels " + (", ".join(map(str, waiting)) + " decided on an estimate, reconciled when their "
                                 "labels land" if waiting else "nothing waits for its labels")]
    error = s.get("estimate_error")
    if error:
        n = len(error["batches"])
        lines.append(f"estimates    off by {error['mean_abs_error']:.3g} on average (bias {error['mean_error']:+.3g}; "
                     f"realized |Ψ̄| {error['mean_abs_realized']:.3g}) over the last {n} reconciled "
                     f"batch{'es' if n != 1 else ''}; a label flip with unchanged inputs is never seen before labels")
    return lines


def _checks_line(policy: dict) -> str:
    """``status``: the check after a promotion and the notify command."""
    margin = policy["verify_margin"]
    line = f"checks       verify margin {'off' if margin is None else format(margin, '.0%')}"
    notify = policy.get("notify")
    return line + (f"; notify `{notify['command']}` (timeout {notify['timeout']:g} s)" if notify else "; no notify")


def _theta(params: dict) -> str:
    """The tuned parameters (κ̄, the κ a threshold is relative to, is shown as κ already)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
                     if k != "kappa") or "untuned"


def _tuned_on(policy: dict) -> str:
    """``status``: the window the policy was tuned on, and the models it pooled."""
    window = policy.get("offline")
    text = f"; tuned on {window[0]}:{window[1]}" if window else ""
    pool = policy.get("pool") or []
    return text + (" pooled with " + ", ".join(f"{w['name']} v{w['policy_version']}" for w in pool) if pool else "")


def _units(policy: dict) -> str:
    """What κ counts, for ``status``."""
    if policy.get("psi_scale") == "expected-loss":
        return "wrong answers per retrain" if policy.get("loss") == "zero_one" else "query losses per retrain"
    return "the paper's Ψ̄ units"


# ---------------------------------------------------------------------------- simulate


@cli.command()
@click.option("--stream", default="covcon-d", show_default=True, type=click.Choice(STREAM_NAMES),
              help="Synthetic stream to simulate (-d: queries sampled from the data, -s: static queries).")
@kappa_option("Retraining cost κ > 0, in Ψ units: one retrain is worth κ similarity-weighted query errors.")
@kappa_schedule_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the stream, the models and the tuner.")
@policies_option()
@model_option()
@click.option("--offline", "n_offline", default=25, show_default=True, type=click.IntRange(min=2),
              help="Number of offline batches used for tuning; the rest are online.")
@click.option("--n-batches", default=100, show_default=True, type=click.IntRange(min=4),
              help="Batches in the stream.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Points per batch.")
@tuning_method_option()
@psi_method_option()
@loss_option()
@label_delay_option()
@retune_every_option()
@json_option("Print a JSON list, one object per policy (with --label-delay: one object naming the delay, "
             "both modes per policy).")
def simulate(stream, kappa, kappa_schedule, seed, policies, model, n_offline, n_batches, batch_size, tuning_method,
             psi_method, loss, label_delay, retune_every, as_json):
    """Tune every policy on the offline batches of a stream, run it online, print the table.

    \b
    Examples:
      cara-mlflow simulate --stream covcon-d --kappa 20 --seed 0
      cara-mlflow simulate --stream covcon-d --kappa 20 --kappa-schedule day-night:1.5:0.5:5
      cara-mlflow simulate --stream gauss-d --kappa 68 --model lr --label-delay 3
    """
    from .losses import resolve_loss
    from .simulate import simulate as run

    loss = loss or "zero_one"       # the streams are classification streams
    resolve_loss(loss)              # a bad name or module: one line before any training
    progress = (lambda message: click.echo(f"… {message}", err=True)) if sys.stderr.isatty() and not as_json else None
    from .simulate import check_retune
    from .validate import policy_names

    check_retune(policy_names(policies), retune_every, label_delay)     # before any training
    if label_delay:
        from .label_delay import simulate_delayed

        delayed = simulate_delayed(stream, kappa=kappa, label_delay=label_delay, policies=policies, n_offline=n_offline,
                                   model=model, seed=seed, tuning_method=tuning_method, n_batches=n_batches,
                                   batch_size=batch_size, psi_method=psi_method, loss=loss, progress=progress,
                                   kappa_schedule=kappa_schedule)
        click.echo(delayed.to_json() if as_json else delayed.table())
        return
    report = run(stream, kappa=kappa, policies=policies, n_offline=n_offline, model=model, seed=seed,
                 tuning_method=tuning_method, n_batches=n_batches, batch_size=batch_size,
                 psi_method=psi_method, loss=loss, progress=progress, kappa_schedule=kappa_schedule,
                 retune_every=retune_every)
    click.echo(report.to_json() if as_json else report.table())


# ---------------------------------------------------------------------------- lifecycle commands


@cli.command()
@managed
@click.option("--offline", default=None, callback=checked(offline_spec), metavar="START:STOP|last:N|all",
              help="Offline window of batch ids, half-open: the complete batches with ids in 0:25 (ids may have "
                   "gaps, e.g. dates 20261001:20261101; at least 2), last:N, the N latest complete batches (a "
                   "weekly re-tune), or all, every complete batch (a re-tune on the growing history: at high κ it "
                   "gives the tuning the retrains one window lacks; it trains a model per batch and computes Ψ̄ "
                   "for every pair of batches, a cost that grows with the square of the history). Default: 0:25; "
                   "with --policy rent, which tunes nothing, the first complete "
                   "batch (one is enough: it fixes the features, the task and the kernel).")
@kappa_option(KAPPA_HELP + " Or give the money: --retrain-cost and --error-cost.", required=False)
@money_options
@click.option("--policy", default=DEFAULT_POLICY, show_default=True, type=click.Choice(tunable_policies()),
              help="Decision policy to tune.")
@click.option("--target", default="label", show_default=True, help="Target column of the batches.")
@column_options("Fixed here, with each feature's kind, for every later step.")
@model_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Trainer seed.")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of each retrain batch held out for the promotion gate.")
@click.option("--n-estimators", default=100, show_default=True, type=click.IntRange(min=1),
              help="rf: trees; hgb: boosting iterations.")
@click.option("--max-depth", default=0, show_default=True, type=click.IntRange(min=0),
              help="rf and hgb: depth limit of the trees; 0 = unlimited.")
@project_uri_option("Your MLflow project with a `train` entry point (default: cara-mlflow's own MLproject; "
                    "offline models are then trained in-process).")
@backend_options(stored=True)
@tuning_method_option()
@psi_method_option(stored=True)
@click.option("--psi-scale", default=None, type=click.Choice(PSI_SCALES),
              help="The unit of Ψ̄ and κ. paper: the paper's Ψ (similarity-weighted losses near the queries, per "
                   "data row; the reproduction's setting). expected-loss: each query's loss estimated from the "
                   "labelled rows near it (Nadaraya-Watson), summed over the queries: Ψ̄ counts expected wrong "
                   "answers (0-1 loss), so κ = retrain cost / cost of one wrong answer. Default: paper with --kappa, "
                   "expected-loss with --retrain-cost. Stored in the policy.")
@guard_options(stored=True)
@notify_options(stored=True)
@verify_margin_option(stored=True)
@click.option("--decide-before-labels/--wait-for-labels", "decide_before_labels", default=None,
              help="Act on a batch as soon as its queries are complete (the marker _QUERIES beside queries.parquet), "
                   "on a Ψ̄ estimated without labels; when its labels land (data.parquet, _SUCCESS) the batch is "
                   "reconciled on the same run, and a retrain the estimate missed is caught up. A retrain trains on "
                   "the latest labelled batch. Default: wait for labels (or keep the active policy's choice).")
@click.option("--pool", default="", metavar="NAME,NAME",
              help="Pool the offline history of your other models of the same process (one per region, shop, "
                   "product line...), registered in the same tracking store (MLFLOW_TRACKING_URI): each NAME's "
                   "active tuned policy lends the offline cost matrix of its tuning run, re-priced at this κ, and "
                   "the threshold minimises the cost summed over every window. For cara-t and cara-ct; the Ψ̄ must "
                   "share a unit (same loss and --psi-scale; a warning if batch sizes or γ seem to differ). At "
                   "high κ, where one window holds one or two retrains, pooling with re-tuning on all history cut "
                   "CARA-T's SCPE on 7 of 9 datasets (benchmarks/results/beyond.md). Given at each tune, like "
                   "--kappa.")
@lock_timeout_option()
def tune(name, store, offline, kappa, retrain_cost, error_cost, price_per_hour, policy, target, features, exclude,
         task, loss, model, seed, holdout, n_estimators, max_depth, project_uri, backend, backend_config, tuning_method,
         psi_method, psi_scale, max_model_age, retrain_budget, notify, notify_timeout, verify_margin,
         decide_before_labels, pool, lock_timeout):
    """Tune the policy on the offline batches and register it as NAME.policy@active.

    Trains a model per offline batch, builds the offline cost matrix, resolves γ, finds θ*, and
    logs the tuning run (matrix, heat map with the tuned and ORACLE strategies, costs). With
    --policy rent nothing is tuned and no model trained: the window fixes features, task and γ.
    """
    from .backends import Backend
    from .guards import Guards
    from .lifecycle import tune as run_tune
    from .lifecycle.tune import UNTUNED, resolve_window
    from .money import Money
    from .store import window_ids
    from .train import TrainerSettings
    from .verify import parse_margin

    # options not given keep the active policy's (a re-tune from cron drops nothing)
    guards = (None if max_model_age is None and retrain_budget is None
              else Guards.parse(max_model_age=max_model_age, retrain_budget=retrain_budget))
    money_given = [name for name, value in (("--retrain-cost", retrain_cost), ("--error-cost", error_cost),
                                            ("--price-per-hour", price_per_hour)) if value is not None]
    if kappa is not None and money_given:
        raise InputError(f"{money_given[0].lstrip('-')}: κ comes from --kappa or from money (--retrain-cost with "
                         f"--error-cost), not both; drop {money_given[0]} or --kappa")
    if kappa is None and not money_given:
        raise InputError("kappa: give --kappa K, or the money it stands for: --retrain-cost AMOUNT|measured with "
                         "--error-cost AMOUNT")
    money = Money.parse(retrain_cost=retrain_cost, error_cost=error_cost, price_per_hour=price_per_hour)
    notify = _stored_notify(notify, notify_timeout)
    margin = None if verify_margin is None else parse_margin(verify_margin)
    margin = "off" if verify_margin is not None and margin is None else margin
    if decide_before_labels:
        decides_before_labels(policy)
    if backend_config is not None and backend is None:
        raise InputError("--backend-config: give the backend it configures too (--backend NAME), as stored in "
                         "the policy with it")
    retrain_backend = None if backend is None else Backend.parse(backend, backend_config)
    # the window and the pool's names are checked before anything (the tracking store) is created
    offline = resolve_window(_batch_store(store), offline, minimum=1 if policy in UNTUNED else 2)
    pool = _pool_names(pool, store, name, policy)
    batch_store, registry = _open(name, store)
    trainer = TrainerSettings(model=model, seed=seed, holdout=holdout, n_estimators=n_estimators,
                              max_depth=max_depth or None)
    # A bar only on a terminal: cron logs and input errors stay one line.
    show_bar = sys.stderr.isatty() and policy not in UNTUNED
    bar = (click.progressbar(length=len(window_ids(batch_store, offline)), label="training offline models",
                             file=sys.stderr) if show_bar else contextlib.nullcontext())
    with bar:
        doc = run_tune(batch_store, registry, offline=offline, kappa=kappa, policy=policy, target=target,
                       trainer=trainer, method=tuning_method, project_uri=project_uri, psi_method=psi_method,
                       lock_timeout=lock_timeout, features=features, exclude=exclude or (), task=task, loss=loss,
                       guards=guards, psi_scale=psi_scale, money=money, notify=notify, verify_margin=margin,
                       decide_before_labels=decide_before_labels, backend=retrain_backend,
                       pool=pool,
                       progress=(lambda done, total: bar.update(1)) if show_bar else None)
    for note in doc.tuning.get("notes", []):
        click.echo(note, err=note.startswith("warning"))
    if "offline_cost" not in doc.tuning:          # nothing tuned (rent)
        click.echo(f"{policy}: nothing to tune (κ={doc.kappa:.4g}, γ={doc.psi.gamma:.4g}, window "
                   f"{doc.offline[0]}:{doc.offline[1]}); registered {name}.policy v{doc.version} @active")
        return
    click.echo(f"tuned {policy}: {_theta(doc.params)}  (κ={doc.kappa:.4g}, γ={doc.psi.gamma:.4g}; offline cost "
               f"{doc.tuning['offline_cost']:.3f}, ORACLE {doc.tuning['oracle_cost']:.3f}); "
               f"registered {name}.policy v{doc.version} @active")


@cli.command()
@managed
@click.option("--batch", "batch_id", required=True, type=click.IntRange(min=0),
              help="Batch the first model is trained on.")
@click.option("--adopt-version", type=click.IntRange(min=1), default=None,
              help="Adopt this already registered version (trained on --batch) instead of training.")
@project_uri_option()
@lock_timeout_option()
def init(name, store, batch_id, adopt_version, project_uri, lock_timeout):
    """Put the first production model in place and commit its batch; `step` goes on from the next."""
    from .lifecycle import init as run_init

    batch_store, registry = _open(name, store)
    result = run_init(batch_store, registry, batch_id=batch_id, adopt_version=adopt_version, project_uri=project_uri,
                      lock_timeout=lock_timeout, **_phase_hook())
    click.echo(result.line())


@cli.command()
@managed
@click.option("--all", "process_all", is_flag=True,
              help="Process every pending batch: late ones (landed in ids passed over) first, then in id order.")
@click.option("--dry-run", is_flag=True, help="Decide and print; write nothing.")
@click.option("--force-retrain", is_flag=True,
              help="Retrain on this batch whatever the policy and the guard rails say (trigger manual).")
@click.option("--no-gate", is_flag=True, help="Promote a retrained model without comparing it with production.")
@click.option("--cooldown", default=DEFAULT_COOLDOWN, show_default=True, type=click.IntRange(min=0),
              help="Batches without a retrain attempt after a rejected challenger.")
@guard_options(stored=False)
@notify_options(stored=False)
@verify_margin_option(stored=False)
@lock_timeout_option()
@project_uri_option()
@backend_options(stored=False)
@psi_method_option(None)
@json_option("One JSON object per batch.")
def step(name, store, process_all, dry_run, force_retrain, no_gate, cooldown, max_model_age, retrain_budget,
         notify, notify_timeout, verify_margin, lock_timeout, project_uri, backend, backend_config, retrain_timeout,
         psi_method, as_json):
    """Process the next batch: Ψ̄, decision, retrain/gate/promote when it pays, commit.

    Exit codes: 0 processed or nothing to do (it says which), 1 bad input or environment
    (one line: what and how to fix; a retrain that failed leaves production unchanged), 75 another
    step holds the lock (or the store's lease), the tracking server or object store cannot be
    reached, or a detached retrain is still running after --retrain-timeout (cron may retry).
    """

    from .lifecycle import StepOptions
    from .lifecycle.events import Notifier, reporting_failure

    options = StepOptions(dry_run=dry_run, force_retrain=force_retrain, gate=not no_gate, cooldown=cooldown,
                          project_uri=project_uri, psi_method=psi_method, max_model_age=max_model_age,
                          retrain_budget=retrain_budget, notify=notify, notify_timeout=notify_timeout,
                          verify_margin=verify_margin, backend=backend, backend_config=backend_config,
                          retrain_timeout=retrain_timeout)
    # a failure before the step reads its policy (a store that is not there, say) goes to --notify too
    with reporting_failure(Notifier(name, notify, notify_timeout)):
        _run_steps(name, store, options, process_all=process_all, as_json=as_json, lock_timeout=lock_timeout)


def _backend_lines(s: dict) -> list[str]:
    """``status``: where retrains run (when not plain local), and the retrains still running."""
    backend, lines = s["policy"]["backend"], []
    if backend["name"] != "local" or backend["config"]:
        detached = " (detached)" if backend["name"] == "local" else ""
        lines.append(f"retrains on  {backend['name']}{detached}")
    for r in s.get("retrains_running", []):
        lines.append(f"retraining   batch {r['batch']} on {r['backend']}: run {r['run_id']} still running")
    return lines


def _run_steps(name, store, options, *, process_all: bool, as_json: bool, lock_timeout: float) -> None:
    """``step``'s work: one batch, or every pending one, each printed as soon as it is done."""
    from dataclasses import asdict

    from .lifecycle import step as run_step, steps as run_steps

    batch_store, registry = _open(name, store)
    kwargs = dict(lock_timeout=lock_timeout, **_phase_hook())
    results = (run_steps(batch_store, registry, options, **kwargs) if process_all
               else [run_step(batch_store, registry, options, **kwargs)])
    for result in results:
        click.echo(jsonout.dumps(asdict(result)) if as_json else result.line())


@cli.command()
@managed
@click.option("--batch", "batch_id", required=True, type=click.IntRange(min=0),
              help="A pending batch: the next in order, or a late one (see `status`).")
@click.option("--reason", required=True, help="Why it is skipped (recorded on the batch run).")
@lock_timeout_option()
def skip(name, store, batch_id, reason, lock_timeout):
    """Record a pending batch as skipped and commit past it (e.g. a malformed batch)."""
    from .lifecycle import skip as run_skip

    batch_store, registry = _open(name, store)
    click.echo(run_skip(batch_store, registry, batch_id=batch_id, reason=reason, lock_timeout=lock_timeout).line())


@cli.command()
@managed
@click.option("--to", "to_version", type=click.IntRange(min=1), default=None,
              help="Version to put back in production (default: the latest earlier version that served: it "
                   "passed its gate or was promoted without one, and was never reverted automatically).")
@click.option("--reason", required=True, help="Why (recorded as the tag cara.rollback_reason).")
@lock_timeout_option()
def rollback(name, store, to_version, reason, lock_timeout):
    """Move production back to an earlier version; the policy restarts as for any change of production."""
    from .lifecycle import rollback as run_rollback

    batch_store, registry = _open(name, store)
    before, after = run_rollback(batch_store, registry, reason=reason, to_version=to_version,
                                 lock_timeout=lock_timeout)
    click.echo(f"production of {name}: {'v' + str(before) if before else 'none'} -> v{after} ({reason})")


@cli.command()
@managed
@click.option("--ui", "ui_base", default="http://127.0.0.1:5000", show_default=True,
              help="Base URL of your MLflow UI, for the links.")
@json_option()
def status(name, store, ui_base, as_json):
    """Production version, batches, policy, costs and MLflow UI links."""
    from .lifecycle import status as run_status

    batch_store, registry = _open(name, store, read_only=True)
    s = run_status(batch_store, registry, ui_base=ui_base)
    if as_json:
        click.echo(jsonout.dumps(s, indent=2))
        return
    prod = s["production"]
    lines = [f"model        {s['name']}  ({s['tracking_uri']})",
             f"production   v{prod['version']} (@{prod['alias']}), trained on batch {prod['trained_on']}",
             f"last batch   {s['last_batch']}",
             "next batch   " + (s["next_state"] if s["next_batch"] is None
                                    else f"{s['next_batch']}: {s['next_state']}"),
             f"policy       {s['policy']['name']} ({_theta(s['policy']['params'])}), κ={s['policy']['kappa']:.4g} "
             f"({_units(s['policy'])}){_tuned_on(s['policy'])}",
             f"cost so far  {s.get('cumulative_cost', 0.0):.3f}"]
    if s.get("last_retrain"):
        r = s["last_retrain"]
        lines.append(f"last retrain batch {r['batch']} -> v{r['version']} (gate {r['gate']})")
    if s.get("spend"):
        m = s["spend"]
        n = m["last_batches"]
        lines.append(f"spend        {m['recent']:.2f} over the last {n} batch{'es' if n != 1 else ''} (staleness "
                     f"{m['recent_staleness']:.2f}, retrains {m['recent_retrains']:.2f}); {m['total']:.2f} in all; "
                     f"next κ {s['kappa_next']:.4g}")
    guards = s["policy"]["guards"]
    if guards["max_model_age"] is not None and s.get("model_age") is not None:
        lines.append(f"model age    {s['model_age']} batches (maximum {guards['max_model_age']})")
    if guards["retrain_budget"] is not None and s.get("retrain_attempts_in_window") is not None:
        n, w = guards["retrain_budget"]["attempts"], guards["retrain_budget"]["window"]
        used = s["retrain_attempts_in_window"]
        over = " (over: --force-retrain ignores the budget)" if used > n else ""
        lines.append(f"budget       {used} of {n} retrain attempt{'s' if n != 1 else ''} used in the last {w} "
                     f"batches{over}")
    lines.append(_checks_line(s["policy"]))
    lines += _backend_lines(s)
    if s.get("pending_check"):
        c = s["pending_check"]
        what = (f"skipped ({c['skip']})" if c["skip"] else
                f"v{c['version']} against v{c['replaced']}, reverted if worse")
        lines.append(f"next check   {what} at the next batch (promoted at batch {c['batch']})")
    lines += _before_labels_lines(s)
    if s.get("cooldown_left"):
        n = s["cooldown_left"]
        lines.append(f"cooldown     no retrain attempt for the next {n} batch{'es' if n != 1 else ''}")
    if s.get("late_batches"):
        lines.append("late         " + ", ".join(map(str, s["late_batches"])) + " (processed after a later batch)")
    if s.get("late_pending"):
        lines.append("late, ready  " + ", ".join(map(str, s["late_pending"])) + " (the next steps process them)")
    if s.get("late_waiting"):
        lines.append("late, waiting " + ", ".join(map(str, s["late_waiting"])) + " (no _SUCCESS yet)")
    if s.get("missing"):
        lines.append("missing ids  " + ", ".join(s["missing"]) + " (no batch yet; one landing there is processed late)")
    for key, url in s["ui"].items():
        lines.append(f"ui {key:<9} {url}")
    click.echo("\n".join(lines))


@cli.command()
@managed
@click.option("--batch", "batch_id", required=True, type=click.IntRange(min=0), help="A processed batch.")
@json_option("One JSON object: decision, psi_bar, psi_terms, score, threshold, kappa, kappa_to_flip, "
             "retrain_cost_to_flip, no_flip_reason, policy, guards, trigger, gate, version, late, reason, run_id.")
def explain(name, store, batch_id, as_json):
    """Why a batch was kept or retrained, and what κ would have changed that.

    Shows Ψ̄ (and its two terms), the value it was compared with, the guard rails in force and
    the one that applied, and the κ at which the policy's answer flips (Retrain at or below it,
    Keep above); none where no κ changes it (CARA-P, NR, the detectors) or where a guard rail,
    --force-retrain or a late batch decided. Example: cara-mlflow explain --batch 31
    """
    from .lifecycle import explain as run_explain

    _, registry = _open(name, store, read_only=True)
    e = run_explain(registry, batch_id)
    if as_json:
        click.echo(jsonout.dumps(e, indent=2))
        return
    click.echo("\n".join(_explain_lines(e)))


def _explain_lines(e: dict) -> list[str]:
    def num(v):
        return "—" if v is None else f"{v:.4g}"

    head = f"batch {e['batch']}{' (late)' if e['late'] else ''}: {e['decision']}"
    if e["gate"]:
        head += f" (gate {e['gate']})"
    lines = [head + f", v{e['version']} serves after it" if e["version"] else head, f"  why       {e['reason']}"]
    if e.get("verify"):
        revert = e["revert"]
        lines.append(f"  check     {e['verify']}" + (f" (v{revert['from']} -> v{revert['to']})" if revert else ""))
    if e["psi_bar"] is not None:
        t = e["psi_terms"]
        lines.append(f"  Ψ̄         {num(e['psi_bar'])} (now {num(t['now'])} − then {num(t['then'])}); "
                     f"policy score {num(e['score'])} against threshold {num(e['threshold'])}")
    if e.get("psi_bar_estimated") is not None:
        realized = ("not yet (its labels have not landed)" if e["provisional"] else num(e["psi_bar_realized"]))
        lines.append(f"  labels    decided before them on the estimate {num(e['psi_bar_estimated'])}; realized Ψ̄ "
                     f"{realized}" + (f"; catch-up: {e['catchup']}" if e.get("catchup") else ""))
    policy = e["policy"]["name"] or "?"
    lines.append(f"  κ         {num(e['kappa'])} ({policy}, policy v{e['policy']['version']})")
    flip = e["kappa_to_flip"]
    if flip is None:
        lines.append(f"  κ to flip none: {e['no_flip_reason']}")
    else:
        other = "kept" if e["decision"] == "retrain" else "retrained"
        side = "above" if e["decision"] == "retrain" else "at or below"
        money = "" if e["retrain_cost_to_flip"] is None else f" (a retrain cost of {e['retrain_cost_to_flip']:.4g})"
        lines.append(f"  κ to flip {flip:.4g}{money}: at a κ {side} it the policy would have {other}")
    g = e["guards"]
    applied = g["applied"] or "none"
    age = "" if g["model_age"] is None else f"; model age {g['model_age']}"
    lines.append(f"  guards    {g['in_force'] or 'none'} (applied: {applied}{age})")
    return lines


@cli.command()
@managed
@click.option("--production", "moves", is_flag=True,
              help="List the moves of the production alias instead (init, promotion, auto-revert, rollback, "
                   "schema retrain): when, what moved it, from and to which version, and why.")
@json_option()
def history(name, store, moves, as_json):
    """The decision table: one row per committed batch (--production: every production move)."""
    from .lifecycle import history as run_history, production_history

    _, registry = _open(name, store, read_only=True)
    rows = production_history(registry) if moves else run_history(registry)
    if as_json:
        click.echo(jsonout.dumps(rows, indent=2))
        return
    if moves:
        for line in _moves_table(rows):
            click.echo(line)
        return
    click.echo(f"{'batch':>6} {'decision':<8} {'Ψ̄':>10} {'cost':>10} {'version':>7} {'gate':<8} reason")
    for r in rows:
        psi = "" if r["psi_bar"] is None else f"{r['psi_bar']:.4g}"
        cost = "" if r["cumulative_cost"] is None else f"{r['cumulative_cost']:.3f}"
        click.echo(f"{r['batch']:>6} {r['decision'] or '':<8} {psi:>10} {cost:>10} "
                   f"{'v' + str(r['version']) if r['version'] else '':>7} {r['gate'] or '':<8} "
                   f"{'(late) ' if r.get('late') and not r['reason'].startswith('late') else ''}{r['reason']}")


def _moves_table(rows: list[dict]) -> list[str]:
    """``history --production`` as a table: one line per move of the production alias."""
    lines = [f"{'time (UTC)':<25} {'by':<14} {'from':>5} {'to':>5} {'batch':>8}  reason"]
    for r in rows:
        was = "" if r["from"] is None else f"v{r['from']}"
        batch = "" if r["batch"] is None else str(r["batch"])
        lines.append(f"{r['time']:<25} {r['by']:<14} {was:>5} {'v' + str(r['to']):>5} {batch:>8}  {r['reason']}")
    return lines


@cli.command("make-stream")
@click.argument("stream", type=click.Choice([s for s in STREAM_NAMES if s.endswith(("-d", "-s"))]))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Batch store directory to write.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the stream.")
@click.option("--n-batches", default=100, show_default=True, type=click.IntRange(min=1), help="Batches to write.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Points per batch.")
def make_stream_command(stream, out, seed, n_batches, batch_size):
    """Write a synthetic stream as a batch store (data.parquet, queries.parquet, _SUCCESS per batch)."""
    from .store import write_stream
    from .streams import make_stream

    store = write_stream(make_stream(stream, n_batches=n_batches, batch_size=batch_size, seed=seed), out)
    click.echo(f"wrote {n_batches} batches of {stream} (seed {seed}) to {store.batches_dir}")


# ---------------------------------------------------------------------------- compare


def _kappa_list(value: str) -> list[float] | str:
    from .compare import parse_kappas

    return "paper" if value.strip() == "paper" else parse_kappas(value)


def _paper_sweep(stream: str | None, n_batches: int, batch_size: int) -> list[float]:
    """``--kappa paper``: the 10 κ of the paper-implied range of one of the paper's datasets, whose
    units hold only for the paper's batches (Ψ̄ sums over a batch's queries)."""
    from .streams import REAL_STREAMS
    from .streams.kappa_ranges import PAPER_KAPPA_RANGES, kappa_sweep

    if stream not in PAPER_KAPPA_RANGES:
        raise click.BadParameter(f"'paper' is the κ sweep of one of the paper's datasets "
                                 f"({', '.join(PAPER_KAPPA_RANGES)}); give --stream, or list values for "
                                 f"{'--store' if stream is None else stream!r}", param_hint="'--kappa'")
    if n_batches != 100 or (stream not in REAL_STREAMS and batch_size != 1000):
        raise click.BadParameter("'paper' is the sweep for the paper's batches (--n-batches 100, --batch-size "
                                 "1000): Ψ̄ sums over a batch's queries, so other sizes change its units; "
                                 "list κ values instead", param_hint="'--kappa'")
    return [float(k) for k in kappa_sweep(stream)]


@cli.command()
@click.option("--stream", default=None, type=click.Choice(STREAM_NAMES),
              help="Stream to compare on (default covcon-d); electricity, covertype and airlines need --data.")
@click.option("--data", "data_path", default=None, type=click.Path(dir_okay=False),
              help="Data file of a real stream (e.g. elec2.csv.gz, covtype.csv.gz).")
@click.option("--store", "store_dir", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Compare on your own batch store instead of a stream: its offline window, then "
                   "the consecutive complete batches after it (queries: each batch's queries file, "
                   "else its data).")
@click.option("--target", default="label", show_default=True, help="--store: target column of the batches.")
@column_options("--store only (a stream's features are its own), as tune fixes them.")
@click.option("--kappa", "kappas", required=True, callback=checked(_kappa_list), metavar="LIST",
              help="Retraining costs: '5,10,20,50', 'log:START:STOP:NUM', or 'paper': the 10 values of the "
                   "paper-implied range of --stream (benchmarks/results/kappa_ranges.md).")
@kappa_schedule_option()
@policies_option()
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1.")
@model_option()
@click.option("--offline", "offline", default="0:25", show_default=True,
              callback=checked(offline_window, plain_count=True), metavar="START:STOP",
              help="Offline (tuning) window of batch ids, half-open (0:25 is batches 0-24); a plain N "
                   "means 0:N. Streams start at 0.")
@click.option("--n-batches", default=100, show_default=True, type=click.IntRange(min=4),
              help="Batches a stream is split into.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Points per batch (synthetic streams).")
@tuning_method_option()
@psi_method_option()
@click.option("--experiment", default=None, help="MLflow experiment (default: cara-compare/<stream or store name>).")
@label_delay_option()
@retune_every_option()
@json_option("Print one JSON object per (policy, κ, seed) (with --label-delay: the delay and both modes' metrics).")
def compare(stream, data_path, store_dir, target, features, exclude, task, loss, kappas, kappa_schedule, policies,
            seeds, model, offline, n_batches, batch_size, tuning_method, psi_method, experiment, label_delay,
            retune_every, as_json):
    """Compare policies over a κ sweep and seeds, logged as an MLflow experiment.

    On a named stream (--stream) or on your own history (--store DIR --offline 0:25). One parent
    run per comparison, one nested run per (policy, κ, seed) with its metrics and per-batch
    curves (step = batch id); figures and a summary table on the parent. Models and cost
    matrices are computed once per seed and shared by every κ. Tracking: MLFLOW_TRACKING_URI,
    else sqlite:///./mlflow.db (with --store: sqlite:///STORE/mlflow.db, as the lifecycle).

    \b
    Examples:
      cara-mlflow compare --stream covcon-d --kappa 5,10,20,50 --seeds 5
      cara-mlflow compare --store /data/store --offline 0:25 --kappa log:1:100:5
      cara-mlflow compare --stream circle-d --kappa paper --seeds 10
      cara-mlflow compare --stream gauss-d --kappa 10,40 --kappa-schedule ramp:1:2
    """
    from .compare import compare as run_compare, summarise

    start, stop = offline
    if stream and store_dir:
        raise click.UsageError("give --stream or --store, not both")
    if kappas == "paper":
        kappas = _paper_sweep(None if store_dir else (stream or "covcon-d"), n_batches, batch_size)
    if store_dir and data_path:
        raise click.UsageError("--data is for the real streams; a --store holds its own data")
    if not store_dir and start != 0:
        raise click.BadParameter(f"a stream starts at batch 0; expected 0:{stop} (or {stop - start}), "
                                 f"got {start}:{stop}", param_hint="'--offline'")
    if not store_dir and (features or exclude or task):
        raise click.UsageError("--features, --exclude and --task are for --store; a stream's columns are its own")
    _quiet_mlflow()
    source, label, batch_ids, local_uri = _comparison_source(stream, data_path, store_dir, target, (start, stop),
                                                             n_batches, batch_size, features, exclude)
    # the paper's streams are classification streams: only a store's task is inferred
    # a store's offline window holds the complete batches whose ids lie in it (ids may have gaps)
    n_offline = sum(start <= i < stop for i in batch_ids) if batch_ids is not None else stop - start
    if kappa_schedule is not None:      # a CSV covers every batch compared: said before any training
        kappa_schedule.values(batch_ids if batch_ids is not None else n_batches)
    if label_delay:                     # said before any training
        from .label_delay import check_label_delay

        check_label_delay(label_delay, (len(batch_ids) if batch_ids is not None else n_batches) - n_offline)
    task, loss = _comparison_task(source, n_offline, task or (None if store_dir else "classification"), loss)
    with click.progressbar(length=seeds * (1 + len(kappas)), label=f"comparing on {label}", file=sys.stderr) as bar:
        result = run_compare(source, kappas=kappas, policies=policies, seeds=range(seeds), model=model,
                             n_offline=n_offline, tuning_method=tuning_method, batch_ids=batch_ids,
                             kappa_schedule=kappa_schedule, label_delay=label_delay, retune_every=retune_every,
                             prepare_kwargs={"psi_method": psi_method, "task": task, "loss": loss},
                             progress=lambda message: bar.update(1))
    from .tracking import mask_uri
    from .tracking.comparison import local_artifact_root, log_comparison

    uri = os.environ.get("MLFLOW_TRACKING_URI") or local_uri
    root = local_artifact_root(uri) if uri.startswith("sqlite:///") else None   # never ./mlruns in the cwd
    parent = log_comparison(result, uri, experiment=experiment, artifact_root=root)
    if as_json:
        click.echo(jsonout.dumps(result.rows(), indent=2))
        return
    _, overall = summarise(result)
    schedule = "" if kappa_schedule is None else f" × {kappa_schedule.describe()}"
    click.echo(f"{result.stream} ({model}), κ ∈ {{{', '.join(f'{k:g}' for k in kappas)}}}{schedule}, "
               f"{seeds} seed(s): means over κ and seeds")
    w = max([8, *(len(p) for p in overall["policy"])])
    click.echo(f"{'policy':<{w}} {'SCPE %':>9} {'query acc':>9} {'retrains':>9} {'cost':>10}")
    for row in overall.itertuples():
        click.echo(f"{row.policy:<{w}} {row.scpe:>9.2f} {row.query_accuracy:>9.3f} {row.n_retrains:>9.2f} "
                   f"{row.strategy_cost:>10.2f}")
    if label_delay:
        from .compare import delayed_summary

        click.echo("\n".join(delayed_summary(result)))
    click.echo("".join(_sampled_line(result, kappas)), nl=False)
    click.echo(f"logged to {mask_uri(uri)} (experiment {experiment or 'cara-compare/' + result.stream}, "
               f"run {parent})")


def _sampled_line(result, kappas) -> list[str]:
    """A line when the offline matrices came from row samples (large batches), else none."""
    share = "offline_predicted_share"
    sampled = [p.timings[share] for p in result.prepared.values() if share in p.timings]
    return [f"offline matrices from row samples ({max(sampled):.0%} of the exact row predictions at most; each "
            f"sample within 1% of max(κ, mean |Ψ̄|) at κ = {min(kappas):g})\n"] if sampled else []


def _comparison_task(source, n_offline: int, task: str | None, loss: str | None) -> tuple[str, str]:
    """The task (given, else inferred from the offline targets and said on stderr) and the loss."""
    from .compare import stream_task
    from .losses import default_loss, resolve_loss

    if task is None:
        task, why = stream_task(source(0), n_offline)
        click.echo(f"task: {task}, inferred from the target ({why}); --task overrides", err=True)
    loss = loss or default_loss(task)
    resolve_loss(loss)
    return task, loss


def _comparison_source(stream, data_path, store_dir, target, offline, n_batches, batch_size, features=None,
                       exclude=None):
    """(stream of a seed, label, batch ids or None, the local sqlite URI) of a comparison."""
    from .tracking import default_tracking_uri

    if store_dir:
        from .compare import store_stream
        from .store import BatchStore

        _check_tracking_for(store_dir)
        store = BatchStore(store_dir)
        fixed, batch_ids = store_stream(store, offline=offline, target=target, features=features,
                                        exclude=exclude or ())
        uri = os.environ["MLFLOW_TRACKING_URI"] if store.remote else default_tracking_uri(store.root)
        return (lambda seed: fixed), fixed.name, batch_ids, uri
    from .streams import make_stream

    label = stream or "covcon-d"
    extra = {"data": data_path} if data_path else {}

    def source(seed):
        return make_stream(label, n_batches=n_batches, batch_size=batch_size, seed=seed, **extra)

    return source, label, None, f"sqlite:///{os.path.abspath('mlflow.db')}"


# ---------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None, *, on_phase=None) -> None:
    """Console entry point. Usage errors exit 1 like every input error (DESIGN.md "Exit codes").

    ``on_phase`` is handed to the lifecycle (:data:`cara_mlflow.lifecycle.PHASES`); only the
    crash tests' harness passes one.
    """
    try:
        code = cli.main(args=argv, prog_name="cara-mlflow", standalone_mode=False, obj={"on_phase": on_phase})
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_ERROR)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "cara-mlflow"
        click.echo(f"{command}: error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        click.echo(f"cara-mlflow: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
