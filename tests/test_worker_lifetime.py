"""A worker's retirement is counted from when its lifetime began, not from when pdrflow's plugin was set up."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
from distributed import Client, LocalCluster

from pdrflow.tasks.resources import WorkerResources, remaining_lifetime

LIFETIME = 120.0


def _remaining_and_age() -> tuple[float | None, float]:
    return remaining_lifetime(), time.time() - psutil.Process().create_time()


def test_remaining_lifetime_counts_from_the_worker_process_start() -> None:
    """The retirement timer starts when the Worker is made, before the plugin's setup (imports and
    registering take seconds on a loaded node): the time left must not exceed lifetime minus the process's age,
    or a model is started that the retirement then cuts."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      lifetime=f"{LIFETIME}s", lifetime_stagger="0s") as cluster, Client(cluster) as client:
        client.register_plugin(WorkerResources())
        remaining, age = client.submit(_remaining_and_age, pure=False).result(timeout=60)
    assert remaining is not None
    assert age > 0.2  # the worker process had been up for a while before the task ran
    assert remaining <= LIFETIME - age + 0.05
    assert remaining > LIFETIME - age - 10  # and not absurdly early either


def _stage_outputs(directory: str) -> float | None:
    """A model task's report as it ends: outputs staged in ``directory`` (node-local), waiting for their archival."""
    from pdrflow.tasks.resources import model_in_progress
    from pdrflow.tasks.types import MANIFEST_FILE

    Path(directory).mkdir()
    (Path(directory) / MANIFEST_FILE).write_text("{}")
    with model_in_progress() as staged:
        staged.append(directory)
    return remaining_lifetime()


def _workers(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def test_a_retiring_worker_stays_until_its_staged_outputs_are_archived(tmp_path: Path) -> None:
    """Past the time it stops taking models, a worker holding staged outputs stays (Dask's lifetime alone
    would close it then and take node-local outputs with it); once they are archived (their scratch dir
    gone) it retires at once, long before its Dask lifetime."""
    stop_after, drain = 20.0, 40.0  # the worker process may take seconds to start on a loaded machine
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      lifetime=f"{stop_after + drain}s", lifetime_stagger="0s") as cluster, Client(cluster) as client:
        client.register_plugin(WorkerResources(drain_seconds=drain))
        staged = tmp_path / "staged"
        remaining = client.submit(_stage_outputs, str(staged), pure=False).result(timeout=60)
        assert remaining is not None and 0 < remaining <= stop_after
        time.sleep(remaining + 3)  # past its stop: no model would start there now
        assert _workers(client) == 1  # its outputs are not archived yet: it stays
        archived = time.monotonic()
        shutil.rmtree(staged)  # what the archival does after its commit
        while _workers(client) and time.monotonic() - archived < 30:
            time.sleep(0.2)
        assert _workers(client) == 0, "the worker should retire once its outputs are archived"
        assert time.monotonic() - archived < 15  # at its next check, not at its Dask lifetime (~37 s later)
