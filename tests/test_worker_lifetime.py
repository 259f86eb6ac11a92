"""A worker's retirement is counted from when its lifetime began, not from when pdrflow's plugin was set up."""

from __future__ import annotations

import time

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
