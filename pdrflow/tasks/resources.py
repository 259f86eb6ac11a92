"""Per-worker-process ledger engine and the run's connection budgets, kept by a Dask WorkerPlugin.

One engine per worker process, reused by every task on that worker. It keeps no connection
between transactions, and each transaction's connection holds a lease of the run's database
budget; an archival opens its own storage connection under a lease of the storage budget and
closes it when done (``tasks/budget.py``): all workers together stay within
``database.max_connections`` and ``storage.max_connections``. Outside a Dask worker (tests, the
driver process) a task opens its own engine and storage, unleased, and closes them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import WorkerPlugin, get_worker
from sqlalchemy.engine import URL

from ..ledger import Ledger
from ..storage import Storage, open_storage
from .budget import Budget, database_budget_name, leased_pool, storage_budget_name
from .retirement import Retirement
from .types import RunSettings

PLUGIN_NAME = "pdrflow-resources"
WORKER_APPLICATION_NAME = "pdrflow-worker"  # PostgreSQL's pg_stat_activity tells worker sessions from the driver's


def _worker_url(settings: RunSettings) -> URL:
    url = settings.database.sqlalchemy_url()
    if url.drivername.startswith("postgresql") and "application_name" not in url.query:
        url = url.update_query_dict({"application_name": WORKER_APPLICATION_NAME})
    return url


class WorkerResources(WorkerPlugin):
    name = PLUGIN_NAME

    def __init__(self, drain_seconds: float = 0.0) -> None:
        self._lock = threading.Lock()
        self.retirement = Retirement(drain_seconds)
        self._ledgers: dict[str, Ledger] = {}
        self._budgets: dict[str, Budget] = {}
        self._process_groups: set[int] = set()  # KOSMA-tau steps running on this worker
        self.stopping = threading.Event()  # set once the driver stopped: kills are interruptions

    def __getstate__(self) -> dict[str, Any]:
        # sent to workers with no connections: each process opens its own
        return {"drain_seconds": self.retirement.drain_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def budget(self, name: str, max_leases: int | None) -> Budget:
        with self._lock:
            if name not in self._budgets:
                self._budgets[name] = Budget(name, max_leases)
            return self._budgets[name]

    def ledger(self, settings: RunSettings) -> Ledger:
        url = _worker_url(settings)
        key = url.render_as_string(hide_password=True)
        budget = self.budget(database_budget_name(settings.grid), settings.database.max_connections)
        with self._lock:
            if key not in self._ledgers:
                self._ledgers[key] = Ledger(url, create=False, poolclass=leased_pool(budget))
            return self._ledgers[key]

    @contextmanager
    def storage(self, settings: RunSettings) -> Iterator[Storage]:
        """A connection of this archival's own, open only while it holds a lease of the storage budget.
        The lease is taken before the connection is made, so the budget alone bounds the SSH connects in
        progress at once (well under sshd's default MaxStartups of 10); nothing else spreads them."""
        budget = self.budget(storage_budget_name(settings.grid), settings.storage.max_connections)
        with budget.held():
            storage = open_storage(settings.storage)
            try:
                yield storage
            finally:
                storage.close()

    def setup(self, worker: Any) -> None:
        self.retirement.start(worker, _started(worker))
        self._kill_models_on_sigterm()

    def _kill_models_on_sigterm(self) -> None:
        """A worker told to stop (SIGTERM: its nanny, a closing notebook kernel, scancel) kills its
        KOSMA-tau steps first. Teardown would too, but only after the worker has said goodbye to its
        nanny, which may kill it before then; the steps run in their own sessions and would live on."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set there (a worker run in a thread keeps its default)
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            self.kill_running()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)

    def track(self, pgid: int) -> None:
        with self._lock:
            self._process_groups.add(pgid)

    def untrack(self, pgid: int) -> None:
        with self._lock:
            self._process_groups.discard(pgid)

    def kill_running(self) -> int:
        """Kill every KOSMA-tau step of this worker (its own session, so no signal reaches it otherwise)."""
        self.stopping.set()
        with self._lock:
            groups = list(self._process_groups)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        return len(groups)

    def teardown(self, worker: Any) -> None:
        self.kill_running()
        with self._lock:
            for ledger in self._ledgers.values():
                ledger.close()
            for budget in self._budgets.values():
                budget.close()
            self._ledgers.clear()
            self._budgets.clear()


def _plugin() -> WorkerResources | None:
    try:
        worker = get_worker()
    except ValueError:
        return None
    plugin = worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, WorkerResources) else None


def kill_running_models() -> int:
    """Run on every worker (``client.run``) when the driver stops: no KOSMA-tau left behind."""
    plugin = _plugin()
    return plugin.kill_running() if plugin is not None else 0


@contextmanager
def tracked_process_group(pgid: int) -> Iterator[threading.Event]:
    """Let the worker kill this step when the driver stops; yields the worker's "stopping" flag.

    The flag is taken now, while the worker exists: once it closes, get_worker() fails.
    """
    plugin = _plugin()
    if plugin is None:
        yield threading.Event()
        return
    plugin.track(pgid)
    try:
        yield plugin.stopping
    finally:
        plugin.untrack(pgid)


def _started(worker: Any) -> float:
    """When the worker's lifetime began, on the monotonic clock. Its retirement timer starts when the Worker is
    made, seconds before a plugin's setup on a loaded node (imports, registering): counted from setup, models
    were started that the retirement then cut. A worker of a nanny has its process to itself, and that
    process's start is a little earlier still (so a bound on the safe side); an in-process worker has only
    setup time."""
    if getattr(worker, "nanny", None) is None:
        return time.monotonic()
    import psutil  # a dependency of distributed

    age = time.time() - psutil.Process().create_time()
    return time.monotonic() - max(0.0, age)


def remaining_lifetime() -> float | None:
    """Seconds until this worker stops taking models (it retires then, or once its outputs are archived),
    or None (no lifetime, or not in a worker)."""
    plugin = _plugin()
    return plugin.retirement.seconds_to_stop() if plugin is not None else None


@contextmanager
def model_in_progress() -> Iterator[list[str]]:
    """Around a model run: the worker does not retire while it runs, nor while the staged outputs the
    caller appends to the yielded list wait for their archival (node-local scratch)."""
    plugin = _plugin()
    staged: list[str] = []
    if plugin is None:
        yield staged
        return
    plugin.retirement.model_started()
    try:
        yield staged
    finally:
        plugin.retirement.model_ended(staged[0] if staged else None)


def archival_given_up(staged_dir: str) -> None:
    """No retry will archive these outputs: the worker need not wait for them before it retires."""
    plugin = _plugin()
    if plugin is not None:
        plugin.retirement.given_up(staged_dir)


def drop_worker_restrictions() -> None:
    """Before a refused task is rescheduled: forget the worker the driver suggested for it (a loose
    restriction), or the scheduler would send it straight back here."""
    from distributed.utils import sync

    try:
        worker = get_worker()
    except ValueError:
        return
    key = worker.get_current_task()
    # The reschedule matters more: should this fail (the task released meanwhile, the scheduler unreachable),
    # the model at worst comes back here once more and is refused again.
    with contextlib.suppress(Exception):
        sync(worker.loop, worker.scheduler.set_restrictions, worker={key: None})


def worker_name() -> str | None:
    try:
        return str(get_worker().address)
    except ValueError:
        return None


@contextmanager
def task_ledger(settings: RunSettings) -> Iterator[Ledger]:
    plugin = _plugin()
    if plugin is not None:
        yield plugin.ledger(settings)
        return
    ledger = Ledger(settings.database.sqlalchemy_url(), create=False)
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def task_storage(settings: RunSettings) -> Iterator[Storage]:
    plugin = _plugin()
    if plugin is not None:
        with plugin.storage(settings) as storage:
            yield storage
        return
    storage = open_storage(settings.storage)
    try:
        yield storage
    finally:
        storage.close()
