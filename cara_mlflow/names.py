"""Names users type and the defaults behind them, each defined once.

This module imports nothing heavy: the CLI builds its ``click.Choice`` lists and help texts from
it without importing numpy, scikit-learn or mlflow, so ``cara-mlflow --help`` stays instant. The
modules that implement a name check their own tables against these (tests do).

>>> MODEL_NAMES, PSI_METHODS, TUNING_METHODS
(('rf', 'lr', 'hgb'), ('exact', 'sample', 'rff', 'auto'), ('exact', 'dual_annealing'))
"""

from __future__ import annotations

#: Models of the default trainer and of ``simulate``/``compare``: ``rf`` random forest, ``lr`` the
#: task's SGD linear model (logistic for classification, the paper's Appendix D), ``hgb``
#: histogram gradient boosting.
MODEL_NAMES: tuple[str, ...] = ("rf", "lr", "hgb")

#: The tasks a policy is tuned for (fixed at ``tune``; inferred from the target by default).
TASKS: tuple[str, ...] = ("classification", "regression")
MODEL_HELP = ("rf: random forest; lr: the task's SGD linear model (logistic for classification, the paper's "
              "Appendix D; linear for regression); hgb: histogram gradient boosting (fast on large batches, "
              "native categoricals).")

#: How Ψ sums are computed (:mod:`cara_mlflow.staleness`).
PSI_METHODS: tuple[str, ...] = ("exact", "sample", "rff", "auto")
DEFAULT_PSI_METHOD = "auto"

#: How a policy's parameters are searched offline (:mod:`cara_mlflow.tuning`).
TUNING_METHODS: tuple[str, ...] = ("exact", "dual_annealing")
DEFAULT_TUNING_METHOD = "exact"

#: The policy ``tune`` uses when none is named.
DEFAULT_POLICY = "cara-t"

#: Batches without a retrain attempt after a rejected challenger (DESIGN.md).
DEFAULT_COOLDOWN = 3
#: Seconds a lifecycle command waits for another's store lock before exiting 75.
DEFAULT_LOCK_TIMEOUT = 30.0
#: The alias of the serving version, and of the active tuned policy.
PRODUCTION_ALIAS = "production"
POLICY_ALIAS = "active"

#: Set by a step for its retrain child: the step's pid. A retrain whose step died (``kill -9``,
#: a reboot) stops at once (:mod:`cara_mlflow.train`), its run left RUNNING for the next step's
#: recovery to mark FAILED and redo, rather than finishing unobserved and racing the redo.
STEP_PID_ENV = "CARA_STEP_PID"
