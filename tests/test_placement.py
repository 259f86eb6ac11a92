"""Where the driver sends a model: to the worker whose model just ended (the scheduler's own choice can be a
busy worker, and the model then waits there for work stealing), and never back to a worker that refused it."""

from __future__ import annotations

from pathlib import Path

from distributed import Client, LocalCluster, Reschedule, get_worker
from helpers import ledger_rows, run_local_grid, slow_null_home

from pdrflow.tasks.resources import drop_worker_restrictions

MODELS = 4  # the grid of helpers.run_local_grid


def test_the_next_model_goes_to_the_worker_whose_model_just_ended(tmp_path: Path, null_home: Path) -> None:
    """Three idle workers and one model at a time: each model after the first runs where the one before it
    ran. Left to itself, the scheduler spreads them: the worker that just finished is still busy with that
    model's archival when the next model is submitted."""
    run_local_grid(tmp_path, slow_null_home(tmp_path, null_home, 1), n_workers=3, max_in_flight=1)
    workers = [worker for (worker,) in ledger_rows(tmp_path / "ledger.sqlite", "select worker from attempts where "
                                                   "kind = 'model' and outcome = 'ok' order by started_at")]
    assert len(workers) == MODELS and len(set(workers)) == 1, workers


def _refused_on(refuser: str) -> str:
    """A run task on a worker that takes no more models: as ``tasks/run.py`` refuses one."""
    here = get_worker().address
    if here == refuser:
        drop_worker_restrictions()
        raise Reschedule()
    return str(here)


def test_a_refused_model_suggested_for_a_worker_runs_on_another() -> None:
    """A model the driver suggested for a worker (a loose restriction) that this worker then refuses (it
    retires before the model could end) must not come straight back to it: the scheduler would otherwise
    send it there again and again until that worker has left."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        refuser, other = sorted(client.scheduler_info()["workers"])
        future = client.submit(_refused_on, refuser, workers=[refuser], allow_other_workers=True, pure=False)
        assert future.result(timeout=30) == other
