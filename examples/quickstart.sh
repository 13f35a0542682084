#!/usr/bin/env bash
# The whole product on the embedded default: a synthetic stream as a batch store, tuning on its
# history, the first production model, then one `step` process per batch, as cron would run it.
#
#   bash examples/quickstart.sh            # STORE=./cara-demo, 100 batches (about 6 minutes)
#   N_BATCHES=40 bash examples/quickstart.sh
#
# Everything lands in $STORE: the batches, mlflow.db (runs, registry) and mlartifacts/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CARA=${CARA:-$here/.venv/bin/cara-mlflow}
export CARA_NAME=${CARA_NAME:-covcon-demo}
export CARA_STORE=${STORE:-$PWD/cara-demo}
N_BATCHES=${N_BATCHES:-100}
N_OFFLINE=${N_OFFLINE:-25}
KAPPA=${KAPPA:-20}

if [ -e "$CARA_STORE" ]; then
  echo "quickstart: $CARA_STORE exists; remove it or set STORE=another/dir" >&2
  exit 1
fi

"$CARA" make-stream covcon-d --out "$CARA_STORE" --n-batches "$N_BATCHES" --seed 0
"$CARA" tune --offline "0:$N_OFFLINE" --kappa "$KAPPA" --policy cara-t
"$CARA" init --batch "$N_OFFLINE"
for ((batch = N_OFFLINE + 1; batch < N_BATCHES; batch++)); do
  "$CARA" step 2> >(grep -v '^cara_mlflow.train: ' >&2)
done
"$CARA" status
"$CARA" history | tail -n 15
cat <<MSG

Browse the whole history in the MLflow UI:
  $here/.venv/bin/mlflow ui --backend-store-uri sqlite:///$CARA_STORE/mlflow.db --port 5000
then open the links printed by: $CARA status
MSG
