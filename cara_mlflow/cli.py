"""The ``cara-mlflow`` command line: thin click adapters over the library.

Library errors (``ValueError``) are mapped here, at the edge, to one line on
stderr and exit code 1 (DESIGN.md "Exit codes"). Heavy imports (scikit-learn,
the simulation) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import sys

import click

from .policies import POLICIES
from .streams import STREAM_NAMES

POLICY_NAMES = tuple(POLICIES)
MODEL_NAMES = ("rf", "lr")  # cara_mlflow.simulate.MODELS; not imported here to keep --help fast

EXIT_INPUT_ERROR = 1


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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per policy.")
def simulate(stream, kappa, seed, policies, model, n_offline, n_batches, batch_size, tuning_method, as_json):
    """Tune every policy on the offline batches of a stream, run it online, print the table.

    Example: cara-mlflow simulate --stream covcon-d --kappa 20 --seed 0
    """
    from .simulate import simulate as run

    progress = (lambda message: click.echo(f"… {message}", err=True)) if sys.stderr.isatty() and not as_json else None
    try:
        report = run(stream, kappa=kappa, policies=policies, n_offline=n_offline, model=model, seed=seed,
                     tuning_method=tuning_method, n_batches=n_batches, batch_size=batch_size, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(report.to_json() if as_json else report.table())


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
