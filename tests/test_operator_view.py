"""The operators' view in the MLflow UI (issue 14): a retrain run is nested under its batch run,
every batch run carries a one-sentence description of its decision, and the registered models
say what manages them — without overwriting a description a user wrote.

Real MLflow, no mocks: a copy of the session's tuned and initialised store (``conftest.base_store``,
its own sqlite tracking store), stepped through the CLI as cron runs it. One module store takes
three steps (two forced retrains, then the policy's decision); the crash test takes its own copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .crash_harness import KILL_ENV
from .helpers import NAME, client, copy_store, drop_batches_from, ok, registry, run_cli, runs_of, the_batch_run

pytestmark = pytest.mark.usefixtures("mlflow_globals_untouched")

PARENT = "mlflow.parentRunId"      # the UI nests a run under the run this names
NOTE = "mlflow.note.content"       # the UI shows it as the run's description
USERS = "Churn model of the retention team; ask #retention before touching it."
STEPPED = (6, 7, 8)


@pytest.fixture(scope="module")
def stepped(base_store, tmp_path_factory) -> tuple[Path, str]:
    """The base store stepped over 6 and 7 (forced retrains) and 8 (the policy decides).

    Before 6 its model's description is cleared (a model registered before descriptions
    existed); before 7 a user writes one. Returns the store and the description after step 6.
    """
    root = copy_store(base_store, tmp_path_factory.mktemp("operator") / "store")
    drop_batches_from(root, STEPPED[-1] + 1)
    raw = client(root)
    raw.update_registered_model(NAME, description="")
    ok(run_cli(root, "step", "--force-retrain"))
    filled = raw.get_registered_model(NAME).description
    raw.update_registered_model(NAME, description=USERS)
    ok(run_cli(root, "step", "--force-retrain"))
    ok(run_cli(root, "step"))
    return root, filled


def test_a_retrain_run_is_a_child_of_its_batch_run(stepped):
    root, _ = stepped
    reg = registry(root)
    for batch in STEPPED:
        run = the_batch_run(reg, batch)
        assert PARENT not in run.tags                                    # batch runs stay top-level
        for retrain in runs_of(reg, "retrain", batch):
            assert retrain.tags[PARENT] == run.run_id, batch
    assert runs_of(reg, "retrain", 6) and runs_of(reg, "retrain", 7)


def test_every_batch_run_describes_its_decision_in_one_sentence(stepped):
    root, _ = stepped
    reg = registry(root)
    for batch in STEPPED:
        tags = the_batch_run(reg, batch).tags
        note = tags[NOTE]
        assert note and "\n" not in note and note.endswith(".") and len(note) <= 300, note
        assert tags["cara.reason"] in note, note
        if tags["cara.decision"] == "keep":
            assert note.startswith(f"Kept v{tags['cara.model_version']}: "), note
            continue
        assert tags["cara.decision"] == "retrain", note
        challenger = f"Retrained: v{reg.versions(trained_on=batch)[0].version}"
        if tags["cara.gate"] == "passed":
            assert note.startswith(f"{challenger} passed the gate and serves from batch {batch} "), note
        else:
            assert note.startswith(f"{challenger} was rejected by the gate, v{tags['cara.model_version']} still "), note
    assert the_batch_run(reg, 6).tags[NOTE].endswith(" (forced by --force-retrain).")


def test_the_registered_models_say_what_manages_them(stepped):
    root, filled = stepped
    raw = client(root)
    for text in (filled, raw.get_registered_model(f"{NAME}.policy").description):
        assert "cara-mlflow" in text, text
    assert f"`{NAME}.policy`" in filled and f"`cara/{NAME}`" in filled and "`production`" in filled
    assert f"cara-mlflow history --name {NAME}" in filled


def test_a_description_a_user_wrote_is_never_overwritten(stepped):
    root, _ = stepped
    reg = registry(root)
    assert reg.versions(trained_on=7) and reg.last_batch() == STEPPED[-1]   # step 7 registered a version
    assert client(root).get_registered_model(NAME).description == USERS


def test_a_retrain_reused_after_a_crash_moves_under_the_batch_run_that_commits_it(fresh):
    drop_batches_from(fresh, 7)
    killed = run_cli(fresh, "step", "--force-retrain", **{KILL_ENV: "after-retrain"})
    assert killed.returncode in (-9, 137), killed.stderr
    reg = registry(fresh)
    (retrain,) = runs_of(reg, "retrain", 6)
    (first,) = runs_of(reg, "batch", 6)
    assert retrain.tags[PARENT] == first.run_id
    ok(run_cli(fresh, "step", "--force-retrain"))
    reg = registry(fresh)
    assert [r.run_id for r in runs_of(reg, "retrain", 6)] == [retrain.run_id]   # reused, not redone
    committed = the_batch_run(reg, 6)
    assert committed.run_id != first.run_id
    assert reg.runs.get(retrain.run_id).tags[PARENT] == committed.run_id
