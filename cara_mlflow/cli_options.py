"""The options several ``cara-mlflow`` commands share, each defined once (name, type, help, env).

Callbacks run the checks of :mod:`cara_mlflow.validate`, so a bad value is refused by click with
the same words the library would use. Nothing here imports numpy, scikit-learn or mlflow.
"""

from __future__ import annotations

import functools

import click

from . import validate
from .backends import DEFAULT_RETRAIN_TIMEOUT
from .errors import InputError
from .names import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PSI_METHOD,
    DEFAULT_TUNING_METHOD,
    MODEL_HELP,
    MODEL_NAMES,
    PSI_METHODS,
    TASKS,
    TUNING_METHODS,
)

__all__ = ["SINGLE_SCHEDULER", "managed",
           "kappa_option", "policies_option", "model_option", "tuning_method_option", "psi_method_option",
           "lock_timeout_option", "project_uri_option", "json_option", "checked", "column_options", "loss_option",
           "kappa_schedule_option", "backend_options"]


def checked(check, **kwargs):
    """A click callback that runs ``check(value, **kwargs)``; an :class:`InputError` becomes click's
    "Invalid value for '--option'" with the check's message (without its leading field name)."""

    def callback(ctx, param, value):
        if value is None:
            return value
        try:
            return check(value, **kwargs)
        except InputError as exc:
            raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None

    return callback


#: Where ``--single-scheduler`` leaves its value for the command's store (click's ``ctx.meta``).
SINGLE_SCHEDULER = "cara.single_scheduler"


def _remember_single_scheduler(ctx, param, value):
    ctx.meta[SINGLE_SCHEDULER] = bool(value)


def managed(fn):
    """``--name``, ``--store`` and ``--single-scheduler`` (env ``CARA_NAME`` / ``CARA_STORE`` /
    ``CARA_SINGLE_SCHEDULER``): the model, its batch store, and how the store is locked."""

    @click.option("--name", envvar="CARA_NAME", required=True, metavar="NAME",
                  help="Registered model managed (env CARA_NAME).")
    @click.option("--store", envvar="CARA_STORE", required=True, metavar="DIR|URI",
                  type=click.Path(file_okay=False),
                  help="Batch store: a directory, or an s3://, gs://, abfs:// (or file://) URI, configured by the "
                       "cloud's standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); an object store "
                       "needs MLFLOW_TRACKING_URI (env CARA_STORE).")
    @click.option("--single-scheduler", envvar="CARA_SINGLE_SCHEDULER", is_flag=True, expose_value=False,
                  callback=_remember_single_scheduler,
                  help="Only one scheduler ever runs cara-mlflow on this store: an object store that does not honour "
                       "conditional writes (probed at each command) is then used without a lease instead of refused "
                       "(env CARA_SINGLE_SCHEDULER).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def kappa_option(help_text: str, *, required: bool = True):
    return click.option("--kappa", required=required, type=float, callback=checked(validate.kappa), help=help_text)


def money_options(f):
    """``--retrain-cost``, ``--error-cost``, ``--price-per-hour``: κ from money (``tune``)."""
    f = click.option("--price-per-hour", default=None, metavar="P",
                     help="With --retrain-cost measured: the compute price of one hour of training.")(f)
    f = click.option("--error-cost", default=None, metavar="AMOUNT",
                     help="What one wrong answer (one unit of loss) costs you, in the same currency.")(f)
    return click.option("--retrain-cost", default=None, metavar="AMOUNT|measured",
                        help="Instead of --kappa: what one retrain costs (κ = retrain cost ÷ error cost, in wrong "
                             "answers), or `measured`: each batch's κ_t prices the median wall time of the last 5 "
                             "trainings (the offline ones at first) at --price-per-hour. Ψ̄ is then measured in "
                             "expected query losses (--psi-scale expected-loss) unless you say otherwise.")(f)


def policies_option():
    from .policies import POLICIES

    return click.option("--policies", default="all", show_default=True, callback=checked(validate.policy_list),
                        help=f"'all' or a comma-separated list of: {', '.join(POLICIES)}.")


def model_option(help_text: str = MODEL_HELP):
    return click.option("--model", default=MODEL_NAMES[0], show_default=True, type=click.Choice(MODEL_NAMES),
                        help=help_text)


def tuning_method_option():
    return click.option("--tuning-method", default=DEFAULT_TUNING_METHOD, show_default=True,
                        type=click.Choice(TUNING_METHODS),
                        help="exact: global optimum over all thresholds; dual_annealing: SciPy's, as the paper.")


def psi_method_option(default: str | None = DEFAULT_PSI_METHOD, *, stored: bool = False):
    """``--psi-method``, the same on every command that computes Ψ̄ (None: the policy's)."""
    text = ("How Ψ sums are computed. exact: every (query, misclassified point) pair; sample: exact "
            "sums over random blocks of pairs until a 99% interval is within 1%; rff: the same with "
            "random Fourier features as control variate; auto: exact up to 2^25 pairs per sum, "
            "sample above (identical to exact on small batches).")
    if stored:
        text += " Stored in the policy as every step's default."
    if default is None:
        text += " Default: the method the policy was tuned with."
    return click.option("--psi-method", default=default, show_default=default is not None,
                        type=click.Choice(PSI_METHODS), help=text)


def guard_options(*, stored: bool):
    """``--max-model-age`` and ``--retrain-budget``: stored by ``tune``, overridable at ``step``."""
    where = ("Stored in the policy; `step` may override it (off or 0: none). A re-tune given neither guard option "
             "keeps the active policy's; either one replaces both." if stored
             else "Overrides the policy's for this step; off or 0 switches it off. Default: the policy's.")
    off = "" if stored else "|off"

    def decorate(f):
        f = click.option("--retrain-budget", default=None, metavar=f"N:W{off}",
                         help="At most N retrain attempts (promoted or rejected, whatever asked for them) in any W "
                              "consecutive batches; a Retrain past it is recorded as a Keep with the tag "
                              f"cara.deferred=budget. --force-retrain ignores it. {where}")(f)
        return click.option("--max-model-age", default=None, metavar=f"N{off}",
                            help="A Keep when the model in use is more than N batches old (processed in order since "
                                 "its training batch) becomes a Retrain with trigger max-age; the cooldown and the "
                                 f"budget still apply. {where}")(f)
    return decorate


def notify_options(*, stored: bool):
    """``--notify`` and ``--notify-timeout``: stored by ``tune``, overridable at ``step``."""
    where = ("Stored in the policy for every step (a step's --notify overrides it)." if stored
             else "Default: the command stored at tune, if any; off: none for this step.")

    def decorate(f):
        default = "Default 10. Stored." if stored else "Default: the policy's (10 unless tune stored another)."
        f = click.option("--notify-timeout", default=None, type=click.FloatRange(min=0, min_open=True, max=3600),
                         metavar="SECONDS", help="Kill a notify command (and its children) after this long; the "
                                                 f"step goes on. {default}")(f)
        return click.option("--notify", default=None, metavar="CMD" if stored else "CMD|off",
                            help="Run CMD (with /bin/sh) for each event: a retrain starting, a promotion, a "
                                 "rejection, an automatic revert, a budget deferral, a failed step. One JSON "
                                 "object on its stdin (keys event, model, batch, text, time, ...; env CARA_EVENT); "
                                 "a failing or hanging CMD never fails the step. " + where + (
                                     " A re-tune without --notify keeps the active policy's; off drops it."
                                     if stored else ""))(f)
    return decorate


def verify_margin_option(*, stored: bool):
    """``--verify-margin``: the check after a promotion, stored by ``tune``, overridable at ``step``."""
    where = ("Default 0.25 (a re-tune keeps the active policy's); off: no check. Stored in the policy; `step` "
             "may override it." if stored else "Default: the policy's (0.25 unless tune stored another); off: no "
             "check in this run.")
    return click.option("--verify-margin", default=None, metavar="FRACTION|off",
                        help="At the batch after a promotion, the new production model and the version it replaced "
                             "are scored on it; production moves back by itself when the new one's query-weighted "
                             "loss is higher by more than FRACTION of the old one's (at the low end of a 99% "
                             f"interval). {where}")


def lock_timeout_option():
    return click.option("--lock-timeout", default=DEFAULT_LOCK_TIMEOUT, show_default=True,
                        type=click.FloatRange(min=0),
                        help="Seconds to wait for another cara-mlflow process's lock on the store before exiting 75.")


def backend_options(*, stored: bool):
    """``--backend`` and ``--backend-config`` (stored by ``tune``, overridable at ``step``); at
    ``step`` also ``--retrain-timeout``."""
    where = ("Stored in the policy (a re-tune keeps the active policy's); `step` may override it." if stored
             else "Default: the policy's.")

    def decorate(command):
        options = [
            click.option("--backend", default=None, metavar="NAME",
                         help="Where a retrain's MLflow Project runs: local (default: here, waited for), databricks, "
                              "kubernetes, or any installed MLflow Projects backend plugin. Every backend but local "
                              "is detached: the retrain is submitted once per batch, waited for up to "
                              "--retrain-timeout, and found again by its tags after a crash. " + where),
            click.option("--backend-config", default=None, metavar="JSON|FILE.json",
                         help="The backend's configuration, as `mlflow run --backend-config` takes it (a Databricks "
                              "cluster spec; for kubernetes kube-job-template-path and repository-uri; see "
                              'examples/backends/). For local, {"detach": true} runs the retrain as its own process '
                              "on this host, under the detached rules. " + where),
        ]
        if not stored:
            options.append(click.option(
                "--retrain-timeout", default=DEFAULT_RETRAIN_TIMEOUT, show_default=True, type=click.FloatRange(min=0),
                help="Seconds to wait for a detached retrain; still running then, the step exits 75 without "
                     "committing the batch and leaves it running: the next step waits for it again."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def project_uri_option(help_text: str = "MLflow project with a `train` entry point (default: the tuned one)."):
    return click.option("--project-uri", default=None, help=help_text)


def json_option(help_text: str = "Machine-readable output."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _names(ctx, param, value: str | None) -> list[str] | None:
    """A comma-separated list of column names (None when the option is not given)."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"empty column name in {value!r}; expected A,B,C")
    return names


def loss_option():
    return click.option(
        "--loss", default=None, metavar="NAME",
        help="Per-sample loss of Ψ̄, the gate and the cost matrix: zero_one, squared, absolute, or a vectorised "
             "module:function(y_true, y_pred) of yours (its import path is stored, never its code). Default: "
             "zero_one for classification, squared for regression.")


def column_options(fixed_where: str):
    """``--features``, ``--exclude``, ``--task`` and ``--loss``: what a batch store's columns mean."""
    options = [
        click.option("--features", default=None, callback=_names, metavar="A,B,C",
                     help="Feature columns (numbers, booleans or text), comma-separated. Default: every column but "
                          f"the target. {fixed_where}"),
        click.option("--exclude", default=None, callback=_names, metavar="ID,TS",
                     help="Columns left out of the features (identifiers, timestamps)."),
        click.option("--task", type=click.Choice(TASKS), default=None,
                     help="classification or regression. Default: inferred from the target (text, booleans and "
                          "integers with at most 20 values are labels), and said."),
        loss_option(),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def kappa_schedule_option():
    """``--kappa-schedule SPEC`` (simulate, compare): κ_t per batch as multiples of ``--kappa``;
    parsed (and a CSV read and checked) when given, its coverage checked against the stream."""
    from .kappa_schedule import SCHEDULE_HELP, parse_kappa_schedule

    return click.option("--kappa-schedule", default=None, metavar="PATTERN|CSV", callback=checked(parse_kappa_schedule),
                        help=SCHEDULE_HELP)
