"""The ledger's state machine, registration and one-transaction archival commit (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import base_config, ledger_rows, write_config

from pdrflow.config import load_config
from pdrflow.errors import ConfigError, LedgerError
from pdrflow.grid import Identity, expand_grid
from pdrflow.ledger import JobState, Ledger
from pdrflow.storage import StoredFile

IDENTITY = Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)


@pytest.fixture
def ledger_and_specs(tmp_path: Path, null_home: Path):
    config = load_config(write_config(tmp_path / "c.yaml", base_config(tmp_path, home=null_home)))
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    yield ledger, list(expand_grid(config, IDENTITY)), tmp_path / "l.sqlite"
    ledger.close()


def test_registration_is_idempotent_and_refuses_a_changed_model(ledger_and_specs) -> None:
    ledger, specs, db = ledger_and_specs
    first = ledger.register_grid("g", specs)
    assert (first.total, first.new, first.archived) == (4, 4, 0)
    again = ledger.register_grid("g", specs)
    assert (again.total, again.new) == (4, 0)
    assert ledger_rows(db, "select count(*) from jobs") == [(4,)]
    assert ledger_rows(db, "select count(*) from models") == [(4,)]
    other_code = [s.__class__(**{**s.__dict__, "model_hash": "f" * 64}) for s in specs[:1]]
    with pytest.raises(ConfigError, match="already holds model 100_30_-10_10_00 computed with other parameters"):
        ledger.register_grid("g", other_code)
    # The same physics in another grid is another job (another archive path) of the same model.
    ledger.register_grid("h", specs)
    assert ledger_rows(db, "select count(*) from jobs") == [(8,)]
    assert ledger_rows(db, "select count(*) from models") == [(4,)]


def test_only_allowed_transitions(ledger_and_specs) -> None:
    ledger, specs, db = ledger_and_specs
    ledger.register_grid("g", specs)
    job = ledger.jobs("g")[0]
    with pytest.raises(LedgerError, match="cannot archive in state pending"):
        ledger.start_archive(job.id, "host", None)
    first = ledger.start_model(job.id, "host", None).attempt_id
    # Dask re-running the task after its worker died: the first attempt ends as interrupted.
    attempt = ledger.start_model(job.id, "host2", None).attempt_id
    assert attempt != first
    assert ledger_rows(db, "select outcome from attempts where id = ?", first) == [("interrupted",)]
    with pytest.raises(LedgerError, match="illegal transition running -> archived"):
        ledger.commit_archive(job.id, attempt, [])
    ledger.finish_model(job.id, attempt, error=None, staged_dir="/scratch/x", host="host", provenance={"k": 1})
    cut_off = ledger.start_archive(job.id, "host", None)
    assert not cut_off.earlier
    ledger.fail_archive(job.id, cut_off.attempt_id, "cut off")
    archive = ledger.start_archive(job.id, "host", None)
    assert archive.earlier  # so the archival clears what the first one may have left behind
    files = [StoredFile("g/pdrgrid/a", 3, "1" * 64), StoredFile("g/pdrgrid/b", 4, "2" * 64)]
    ledger.commit_archive(job.id, archive.attempt_id, files)
    assert ledger.job(job.id).state is JobState.ARCHIVED
    assert ledger_rows(db, "select path, size from archived_files order by path") == [
        ("g/pdrgrid/a", 3), ("g/pdrgrid/b", 4)]
    with pytest.raises(LedgerError, match="illegal transition archived -> pending"):
        ledger.requeue(job.id, "no")


def test_start_model_of_a_computed_job_decides_in_its_transaction(ledger_and_specs) -> None:
    """Dask reran a finished task whose result it lost: staged outputs readable here are archived as
    they are (no new attempt, state unchanged); unreadable ones send the model round again."""
    ledger, specs, db = ledger_and_specs
    ledger.register_grid("g", specs)
    here, elsewhere = ledger.jobs("g")[:2]
    for job, staged in ((here, "/scratch/here"), (elsewhere, "/scratch/elsewhere")):
        attempt = ledger.start_model(job.id, "h", None).attempt_id
        ledger.finish_model(job.id, attempt, error=None, staged_dir=staged, host="h", provenance={})
    readable = {"/scratch/here"}.__contains__
    again = ledger.start_model(here.id, "h2", None, staged_readable=readable)
    assert again.attempt_id is None and again.staged_dir == "/scratch/here"
    assert ledger.job(here.id).state is JobState.COMPUTED
    rerun = ledger.start_model(elsewhere.id, "h2", None, staged_readable=readable)
    assert rerun.attempt_id is not None
    assert ledger.job(elsewhere.id).state is JobState.RUNNING and ledger.job(elsewhere.id).staged_dir is None
    assert ledger_rows(db, "select job_id, count(*) from attempts group by job_id order by job_id") == [
        (here.id, 1), (elsewhere.id, 2)]


def test_archive_commit_is_one_transaction(ledger_and_specs) -> None:
    ledger, specs, db = ledger_and_specs
    ledger.register_grid("g", specs)
    first, second = ledger.jobs("g")[:2]
    for job in (first, second):
        attempt = ledger.start_model(job.id, "h", None).attempt_id
        ledger.finish_model(job.id, attempt, error=None, staged_dir="/s", host="h", provenance={})
    ledger.commit_archive(first.id, ledger.start_archive(first.id, "h", None).attempt_id, [StoredFile("g/x", 1, "1" * 64)])
    # The second job's commit collides with the first's file record: nothing of it may remain.
    with pytest.raises(Exception):  # noqa: B017 - the database's integrity error
        ledger.commit_archive(second.id, ledger.start_archive(second.id, "h", None).attempt_id,
                              [StoredFile("g/y", 1, "2" * 64), StoredFile("g/x", 1, "1" * 64)])
    assert ledger.job(second.id).state is JobState.COMPUTED
    assert ledger_rows(db, "select path from archived_files") == [("g/x",)]


def test_requeue_running_touches_only_running_jobs(ledger_and_specs) -> None:
    ledger, specs, db = ledger_and_specs
    ledger.register_grid("g", specs)
    jobs = ledger.jobs("g")
    ledger.start_model(jobs[0].id, "h", None)
    assert ledger.requeue_running([j.id for j in jobs], "driver stopped") == 1
    assert {j.state for j in ledger.jobs("g")} == {JobState.PENDING}
    assert ledger_rows(db, "select outcome, error from attempts") == [("interrupted", "driver stopped")]


def test_a_run_given_up_while_it_ran_cannot_finish_the_job_of_the_run_after_it(ledger_and_specs) -> None:
    """A worker counted as lost may still finish its thread: that late finish changes nothing."""
    ledger, specs, db = ledger_and_specs
    ledger.register_grid("g", specs)
    job = ledger.jobs("g")[0]
    lost = ledger.start_model(job.id, "node1", "tls://node1:1").attempt_id
    ledger.requeue_running([job.id], "run lost: KilledWorker")
    rerun = ledger.start_model(job.id, "node2", "tls://node2:1").attempt_id
    assert lost is not None and rerun is not None
    assert not ledger.finish_model(job.id, lost, error=None, staged_dir="/scratch/node1/x", host="node1", provenance={})
    assert ledger.job(job.id).state == JobState.RUNNING  # still the rerun's
    assert ledger.finish_model(job.id, rerun, error=None, staged_dir="/scratch/node2/y", host="node2", provenance={})
    assert (ledger.job(job.id).state, ledger.job(job.id).staged_dir) == (JobState.COMPUTED, "/scratch/node2/y")
    assert ledger_rows(db, "select outcome from attempts order by id") == [("interrupted",), ("ok",)]


def test_schema_revision_constant_is_the_newest_migration() -> None:
    from pdrflow.ledger.migrate import SCHEMA_REVISION, head_revision

    assert head_revision() == SCHEMA_REVISION
