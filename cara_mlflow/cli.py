"""The ``cara-mlflow`` command line: thin click adapters over the library.

Library errors (``ValueError``) are mapped here, at the edge, to one line on
stderr and exit code 1 (DESIGN.md "Exit codes"). Heavy imports (scikit-learn,
the simulation) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

import click

from .policies import POLICIES
from .streams import STREAM_NAMES

POLICY_NAMES = tuple(POLICIES)
#: staleness.PSI_METHODS, spelled out: importing staleness (scipy.sparse) would slow every --help
PSI_METHODS = ("exact", "sample", "rff", "auto")
MODEL_NAMES = ("rf", "lr")  # cara_mlflow.simulate.MODELS; not imported here to keep --help fast

EXIT_INPUT_ERROR = 1
EXIT_LOCKED = 75   # EX_TEMPFAIL: another step holds the lock; cron may retry


def _fail(message: str) -> None:
    click.echo(f"cara-mlflow: error: {message}", err=True)
    sys.exit(EXIT_INPUT_ERROR)


def _positive_float(ctx, param, value):
    if value is None:
        return value
    if not value > 0 or value != value or value == float("inf"):
        raise click.BadParameter(f"expected a finite number > 0 (the cost of one retrain in Ψ units), got {value}")
    return value


def _policy_list(ctx, param, value: str):
    names = list(POLICY_NAMES) if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown policy {', '.join(unknown) or '(none)'}: expected 'all' or a "
                                 f"comma-separated list of {', '.join(POLICY_NAMES)}")
    return names


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cara-mlflow")
def cli():
    """cara-mlflow: decide when to retrain a production model, at the lowest total cost.

    Each batch of labelled data and queries gives a staleness cost Ψ̄ (how much
    worse the current model got near the queries); a retrain costs κ in the same
    units. A policy tuned offline on history decides Keep or Retrain.
    """


def _psi_method_option(default: str | None, *, stored: bool = False):
    """``--psi-method``, the same on every command that computes Ψ̄."""
    text = ("How Ψ sums are computed. exact: every (query, misclassified point) pair; sample: exact "
            "sums over random blocks of pairs until a 99% interval is within 1%; rff: the same with "
            "random Fourier features as control variate; auto: exact up to 2^25 pairs per sum, "
            "sample above (identical to exact on small batches).")
    if stored:
        text += " Stored in the policy as every step's default."
    if default is None:
        text += " Default: the method the policy was tuned with."
    return click.option("--psi-method", default=default, show_default=default is not None,
                        type=click.Choice(list(PSI_METHODS)), help=text)


@cli.command()
@click.option("--stream", default="covcon-d", show_default=True, type=click.Choice(STREAM_NAMES),
              help="Synthetic stream to simulate (-d: queries sampled from the data, -s: static queries).")
@click.option("--kappa", required=True, type=float, callback=_positive_float,
              help="Retraining cost κ > 0, in Ψ units: one retrain is worth κ similarity-weighted query errors.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the stream, the models and the tuner.")
@click.option("--policies", default="all", show_default=True, callback=_policy_list,
              help=f"'all' or a comma-separated list of: {', '.join(POLICY_NAMES)}.")
@click.option("--model", default="rf", show_default=True, type=click.Choice(MODEL_NAMES),
              help="rf: RandomForestClassifier; lr: SGDClassifier with log loss (the paper's Appendix D).")
@click.option("--offline", "n_offline", default=25, show_default=True, type=click.IntRange(min=2),
              help="Number of offline batches used for tuning; the rest are online.")
@click.option("--n-batches", default=100, show_default=True, type=click.IntRange(min=4),
              help="Batches in the stream.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Points per batch.")
@click.option("--tuning-method", default="exact", show_default=True,
              type=click.Choice(["exact", "dual_annealing"]),
              help="exact: global optimum over all thresholds; dual_annealing: SciPy's, as the paper.")
@_psi_method_option("auto")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per policy.")
def simulate(stream, kappa, seed, policies, model, n_offline, n_batches, batch_size, tuning_method, psi_method,
             as_json):
    """Tune every policy on the offline batches of a stream, run it online, print the table.

    Example: cara-mlflow simulate --stream covcon-d --kappa 20 --seed 0
    """
    from .simulate import simulate as run

    progress = (lambda message: click.echo(f"… {message}", err=True)) if sys.stderr.isatty() and not as_json else None
    try:
        report = run(stream, kappa=kappa, policies=policies, n_offline=n_offline, model=model, seed=seed,
                     tuning_method=tuning_method, n_batches=n_batches, batch_size=batch_size,
                     psi_method=psi_method, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(report.to_json() if as_json else report.table())


# ---------------------------------------------------------------------------- lifecycle commands


def _managed(fn):
    """--name and --store (env CARA_NAME / CARA_STORE), shared by every lifecycle command."""

    @click.option("--name", envvar="CARA_NAME", required=True, metavar="NAME",
                  help="Registered model managed (env CARA_NAME).")
    @click.option("--store", envvar="CARA_STORE", required=True, metavar="DIR",
                  type=click.Path(file_okay=False), help="Batch store directory (env CARA_STORE).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def _open(name: str, store_dir: str):
    """The batch store and the registry: MLFLOW_TRACKING_URI, else sqlite:///STORE/mlflow.db."""
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # stdout is ours (one line per batch, or --json): no "🏃 View run ... at: URL" lines from MLflow
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    from .registry import Registry, default_artifact_root, default_tracking_uri
    from .store import BatchStore

    store = BatchStore(store_dir)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store.root)
    return store, Registry(uri, name, artifact_root=default_artifact_root(store.root))


def _run_guarded(fn):
    """Map library errors to one line and the exit codes of DESIGN.md."""
    from .lifecycle import LockTimeout, StepFailed
    from .registry import RegistryError, mask_uri

    try:
        return fn()
    except LockTimeout as exc:
        click.echo(f"cara-mlflow: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except (ValueError, RegistryError, StepFailed) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # an MLflow or connection failure we did not foresee: still one line
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            uri = mask_uri(os.environ.get("MLFLOW_TRACKING_URI", "the default sqlite store"))
            _fail(f"MLflow ({uri}): {mask_uri(str(exc).splitlines()[0][:300])}")
        raise


def _offline_window(ctx, param, value: str):
    try:
        start, stop = (int(v) for v in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected START:STOP (half-open, e.g. 0:25 for batches 0-24), got {value!r}")
    if start < 0 or stop - start < 2:
        raise click.BadParameter(f"expected 0 <= START and at least 2 batches, got {value!r}")
    return start, stop


@cli.command()
@_managed
@click.option("--offline", default="0:25", show_default=True, callback=_offline_window, metavar="START:STOP",
              help="Offline window of batch ids, half-open: 0:25 is batches 0-24.")
@click.option("--kappa", required=True, type=float, callback=_positive_float,
              help="What one retrain is worth, in expected similarity-weighted query errors (κ > 0).")
@click.option("--policy", default="cara-t", show_default=True,
              type=click.Choice([p for p in POLICY_NAMES if p != "oracle"]), help="Decision policy to tune.")
@click.option("--target", default="label", show_default=True, help="Target column of the batches.")
@click.option("--model", default="rf", show_default=True, type=click.Choice(MODEL_NAMES),
              help="Model of the default trainer (rf: random forest, lr: SGD logistic regression).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Trainer seed.")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of each retrain batch held out for the promotion gate.")
@click.option("--n-estimators", default=100, show_default=True, type=click.IntRange(min=1), help="rf: trees.")
@click.option("--project-uri", default=None, help="Your MLflow project with a `train` entry point "
              "(default: cara-mlflow's own MLproject; offline models are then trained in-process).")
@click.option("--tuning-method", default="exact", show_default=True, type=click.Choice(["exact", "dual_annealing"]),
              help="exact: global optimum over all thresholds; dual_annealing: SciPy's, as the paper.")
@_psi_method_option("auto", stored=True)
def tune(name, store, offline, kappa, policy, target, model, seed, holdout, n_estimators, project_uri, tuning_method,
         psi_method):
    """Tune the policy on the offline batches and register it as NAME.policy@active.

    Trains a model per offline batch, builds the offline cost matrix, resolves γ, finds θ*, and
    logs the tuning run (matrix, heat map with the tuned and ORACLE strategies, costs).
    """
    from .lifecycle import DEFAULT_LOCK_TIMEOUT, store_lock, tune as run_tune
    from .train import TrainerSettings

    batch_store, registry = _open(name, store)

    def go():
        trainer = TrainerSettings(model=model, seed=seed, holdout=holdout, n_estimators=n_estimators)
        with store_lock(batch_store, DEFAULT_LOCK_TIMEOUT):
            registry.check_reachable()
            # A bar only on a terminal: cron logs and input errors stay one line.
            bar = (click.progressbar(length=offline[1] - offline[0], label="training offline models",
                                     file=sys.stderr) if sys.stderr.isatty() else contextlib.nullcontext())
            with bar:
                doc = run_tune(batch_store, registry, offline=offline, kappa=kappa, policy=policy, target=target,
                               trainer=trainer, method=tuning_method, project_uri=project_uri, psi_method=psi_method,
                               progress=(lambda done, total: bar.update(1)) if sys.stderr.isatty() else None)
        theta = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in doc["params"].items())
        click.echo(f"tuned {policy}: {theta}  (κ={kappa:g}, γ={doc['psi']['gamma']:.4g}; offline cost "
                   f"{doc['tuning']['offline_cost']:.3f}, ORACLE {doc['tuning']['oracle_cost']:.3f}); "
                   f"registered {name}.policy v{doc['policy_version']} @active")

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--batch", "batch_id", required=True, type=click.IntRange(min=0), help="Batch the first model is trained on.")
@click.option("--adopt-version", type=click.IntRange(min=1), default=None,
              help="Adopt this already registered version (trained on --batch) instead of training.")
@click.option("--project-uri", default=None, help="MLflow project with a `train` entry point (default: the tuned one).")
def init(name, store, batch_id, adopt_version, project_uri):
    """Put the first production model in place and commit its batch; `step` goes on from the next."""
    from .lifecycle import DEFAULT_LOCK_TIMEOUT, init as run_init, store_lock

    batch_store, registry = _open(name, store)

    def go():
        with store_lock(batch_store, DEFAULT_LOCK_TIMEOUT):
            registry.check_reachable()
            result = run_init(batch_store, registry, batch_id=batch_id, adopt_version=adopt_version,
                              project_uri=project_uri)
        click.echo(result.line())

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--all", "process_all", is_flag=True, help="Process every pending batch, in order.")
@click.option("--dry-run", is_flag=True, help="Decide and print; write nothing.")
@click.option("--force-retrain", is_flag=True, help="Retrain on this batch whatever the policy says (trigger manual).")
@click.option("--no-gate", is_flag=True, help="Promote a retrained model without comparing it with production.")
@click.option("--cooldown", default=3, show_default=True, type=click.IntRange(min=0),
              help="Batches without a retrain attempt after a rejected challenger.")
@click.option("--lock-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for another step's lock before exiting 75.")
@click.option("--project-uri", default=None, help="MLflow project with a `train` entry point (default: the tuned one).")
@_psi_method_option(None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per batch.")
def step(name, store, process_all, dry_run, force_retrain, no_gate, cooldown, lock_timeout, project_uri, psi_method,
         as_json):
    """Process the next batch: Ψ̄, decision, retrain/gate/promote when it pays, commit.

    Exit codes: 0 processed or nothing to do (it says which), 1 bad input or environment
    (one line: what and how to fix), 75 another step holds the lock.
    """
    from dataclasses import asdict

    from .lifecycle import step as run_step, store_lock

    batch_store, registry = _open(name, store)

    def go():
        with store_lock(batch_store, lock_timeout):
            registry.check_reachable()
            while True:
                result = run_step(batch_store, registry, dry_run=dry_run, force_retrain=force_retrain,
                                  gate=not no_gate, cooldown=cooldown, project_uri=project_uri,
                                  psi_method=psi_method)
                click.echo(json.dumps(asdict(result)) if as_json else result.line())
                if not process_all or result.status != "processed":
                    break

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--batch", "batch_id", required=True, type=click.IntRange(min=0), help="The next pending batch.")
@click.option("--reason", required=True, help="Why it is skipped (recorded on the batch run).")
def skip(name, store, batch_id, reason):
    """Record the next pending batch as skipped and commit past it (e.g. a malformed batch)."""
    from .lifecycle import DEFAULT_LOCK_TIMEOUT, skip as run_skip, store_lock

    batch_store, registry = _open(name, store)

    def go():
        with store_lock(batch_store, DEFAULT_LOCK_TIMEOUT):
            registry.check_reachable()
            click.echo(run_skip(batch_store, registry, batch_id=batch_id, reason=reason).line())

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--to", "to_version", type=click.IntRange(min=1), default=None,
              help="Version to put back in production (default: the previous one that passed its gate).")
@click.option("--reason", required=True, help="Why (recorded as the tag cara.rollback_reason).")
def rollback(name, store, to_version, reason):
    """Move production back to an earlier version; the policy restarts as for any change of production."""
    from .lifecycle import DEFAULT_LOCK_TIMEOUT, rollback as run_rollback, store_lock

    batch_store, registry = _open(name, store)

    def go():
        with store_lock(batch_store, DEFAULT_LOCK_TIMEOUT):
            registry.check_reachable()
            before, after = run_rollback(registry, reason=reason, to_version=to_version)
        click.echo(f"production of {name}: {'v' + str(before) if before else 'none'} -> v{after} ({reason})")

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--ui", "ui_base", default="http://127.0.0.1:5000", show_default=True,
              help="Base URL of your MLflow UI, for the links.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(name, store, ui_base, as_json):
    """Production version, batches, policy, costs and MLflow UI links."""
    from .lifecycle import status as run_status

    batch_store, registry = _open(name, store)

    def go():
        registry.check_reachable()
        s = run_status(batch_store, registry, ui_base=ui_base)
        if as_json:
            click.echo(json.dumps(s, indent=2))
            return
        prod = s["production"]
        theta = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["policy"]["params"].items())
        lines = [f"model        {s['name']}  ({s['tracking_uri']})",
                 f"production   v{prod['version']} (@{prod['alias']}), trained on batch {prod['trained_on']}",
                 f"last batch   {s['last_batch']}",
                 f"next batch   {s['next_batch']}: {s['next_state']}",
                 f"policy       {s['policy']['name']} ({theta}), κ={s['policy']['kappa']:g}",
                 f"cost so far  {s.get('cumulative_cost', 0.0):.3f}"]
        if s.get("last_retrain"):
            r = s["last_retrain"]
            lines.append(f"last retrain batch {r['batch']} -> v{r['version']} (gate {r['gate']})")
        if s.get("cooldown_until") is not None:
            lines.append(f"cooldown     no retrain attempt until after batch {s['cooldown_until']}")
        for key, url in s["ui"].items():
            lines.append(f"ui {key:<9} {url}")
        click.echo("\n".join(lines))

    _run_guarded(go)


@cli.command()
@_managed
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(name, store, as_json):
    """The decision table: one row per committed batch."""
    from .lifecycle import history as run_history

    _, registry = _open(name, store)

    def go():
        registry.check_reachable()
        rows = run_history(registry)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        click.echo(f"{'batch':>6} {'decision':<8} {'Ψ̄':>10} {'cost':>10} {'version':>7} {'gate':<8} reason")
        for r in rows:
            psi = "" if r["psi_bar"] is None else f"{r['psi_bar']:.4g}"
            cost = "" if r["cumulative_cost"] is None else f"{r['cumulative_cost']:.3f}"
            click.echo(f"{r['batch']:>6} {r['decision'] or '':<8} {psi:>10} {cost:>10} "
                       f"{'v' + str(r['version']) if r['version'] else '':>7} {r['gate'] or '':<8} {r['reason']}")

    _run_guarded(go)


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

    def go():
        store = write_stream(make_stream(stream, n_batches=n_batches, batch_size=batch_size, seed=seed), out)
        click.echo(f"wrote {n_batches} batches of {stream} (seed {seed}) to {store.batches_dir}")

    _run_guarded(go)



def _kappa_list(ctx, param, value):
    from .compare import parse_kappas

    try:
        return parse_kappas(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("kappa: "))


def _compare_offline(ctx, param, value: str):
    text = value.strip()
    if text.isdigit():
        return _offline_window(ctx, param, f"0:{text}")
    return _offline_window(ctx, param, text)


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
@click.option("--kappa", "kappas", required=True, callback=_kappa_list, metavar="LIST",
              help="Retraining costs: '5,10,20,50' or 'log:START:STOP:NUM'.")
@click.option("--policies", default="all", show_default=True, callback=_policy_list,
              help=f"'all' or a comma-separated list of: {', '.join(POLICY_NAMES)}.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1.")
@click.option("--model", default="rf", show_default=True, type=click.Choice(MODEL_NAMES),
              help="rf: RandomForestClassifier; lr: SGDClassifier with log loss.")
@click.option("--offline", "offline", default="0:25", show_default=True, callback=_compare_offline,
              metavar="START:STOP", help="Offline (tuning) window of batch ids, half-open (0:25 is "
                                         "batches 0-24); a plain N means 0:N. Streams start at 0.")
@click.option("--n-batches", default=100, show_default=True, type=click.IntRange(min=4),
              help="Batches a stream is split into.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Points per batch (synthetic streams).")
@click.option("--tuning-method", default="exact", show_default=True, type=click.Choice(["exact", "dual_annealing"]),
              help="exact: global optimum over all thresholds; dual_annealing: SciPy's, as the paper.")
@_psi_method_option("auto")
@click.option("--experiment", default=None, help="MLflow experiment (default: cara-compare/<stream or store name>).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per (policy, κ, seed).")
def compare(stream, data_path, store_dir, target, kappas, policies, seeds, model, offline, n_batches, batch_size,
            tuning_method, psi_method, experiment, as_json):
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
    """
    from .compare import compare as run_compare, log_comparison, store_stream, summarise
    from .registry import mask_uri
    from .streams import make_stream

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if stream and store_dir:
        _fail("compare: give --stream or --store, not both")
    if store_dir and data_path:
        _fail("compare: --data is for the real streams; a --store holds its own data")
    start, stop = offline
    if not store_dir and start != 0:
        _fail(f"offline: a stream starts at batch 0; expected 0:{stop} (or {stop - start}), got {start}:{stop}")

    def go():
        batch_ids = None
        if store_dir:
            from .registry import default_tracking_uri
            from .store import BatchStore

            store = BatchStore(store_dir)
            fixed, batch_ids = store_stream(store, offline=(start, stop), target=target)
            source, label = (lambda seed: fixed), fixed.name
            local_uri = default_tracking_uri(store.root)
        else:
            label = stream or "covcon-d"

            def source(seed):
                extra = {"data": data_path} if data_path else {}
                return make_stream(label, n_batches=n_batches, batch_size=batch_size, seed=seed, **extra)

            local_uri = f"sqlite:///{os.path.abspath('mlflow.db')}"
        uri = os.environ.get("MLFLOW_TRACKING_URI") or local_uri
        steps = seeds * (1 + len(kappas))
        with click.progressbar(length=steps, label=f"comparing on {label}", file=sys.stderr) as bar:
            result = run_compare(source, kappas=kappas, policies=policies, seeds=range(seeds), model=model,
                                 n_offline=stop - start, tuning_method=tuning_method, batch_ids=batch_ids,
                                 prepare_kwargs={"psi_method": psi_method},
                                 progress=lambda message: bar.update(1))
        if uri.startswith("sqlite:") and not os.environ.get("MLFLOW_TRACKING_URI"):
            _ensure_local_experiment(uri, experiment or f"cara-compare/{result.stream}")
        parent = log_comparison(result, uri, experiment=experiment)
        if as_json:
            rows = result.rows()
            click.echo(json.dumps(rows, indent=2))
            return
        _, overall = summarise(result)
        click.echo(f"{result.stream} ({model}), κ ∈ {{{', '.join(f'{k:g}' for k in kappas)}}}, "
                   f"{seeds} seed(s): means over κ and seeds")
        click.echo(f"{'policy':<8} {'SCPE %':>9} {'query acc':>9} {'retrains':>9} {'cost':>10}")
        for row in overall.itertuples():
            click.echo(f"{row.policy:<8} {row.scpe:>9.2f} {row.query_accuracy:>9.3f} {row.n_retrains:>9.2f} "
                       f"{row.strategy_cost:>10.2f}")
        click.echo(f"logged to {mask_uri(uri)} (experiment {experiment or 'cara-compare/' + result.stream}, "
                   f"run {parent})")

    _run_guarded(go)


def _ensure_local_experiment(uri: str, name: str) -> None:
    """Put a new local experiment's artifacts next to its sqlite file (./mlartifacts), not in ./mlruns."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        root = os.path.join(os.path.dirname(uri.removeprefix("sqlite:///")), "mlartifacts")
        client.create_experiment(name, artifact_location=os.path.join(root, name.replace("/", "_")))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's usage errors exit 1 like every input error (DESIGN.md)."""
    try:
        code = cli.main(args=argv, prog_name="cara-mlflow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "cara-mlflow"
        click.echo(f"{command}: error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    except click.ClickException as exc:
        click.echo(f"cara-mlflow: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
