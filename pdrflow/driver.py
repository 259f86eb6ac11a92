"""The driver: register the grid, submit run + archive tasks, resubmit archivals with backoff.

The ledger is the truth; futures are only how the driver learns that something finished.
A bounded number of models is in flight; an archival that fails is retried (archival only)
after an exponential backoff with jitter; a model is computed again only when its staged
outputs are gone or its run was lost (its worker died: ``LOST_RUN_RETRIES``). How often a job
was tried in this run is counted from the ledger's attempts (``ledger/tries.py``), not here.
"""

from __future__ import annotations

import heapq
import logging
import random
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from distributed import Future, wait

from .cluster import ClusterHandle, start_cluster
from .config import Config
from .dashboard import page_link, register_dashboard
from .dashboard.eta import mean_cost
from .errors import LedgerError, ModelFailed, StorageFailed
from .ledger import JobRef, Ledger
from .ledger.lease import GridLease
from .ledger.tries import record_lost_run, run_start, tries_since
from .plan import RUN_STATES, Plan
from .preflight import preflight
from .states import EventKind, JobState
from .tasks.archive import archive_job
from .tasks.resources import WorkerResources, kill_running_models
from .tasks.run import run_model
from .tasks.types import ArchiveResult, Manifest, ModelJob

log = logging.getLogger("pdrflow")

LOST_RUN_RETRIES = 2  # model runs lost to a dead worker are re-queued this often
# A re-archival (resumed run) waits this long after the start for a worker on the host whose node-local scratch
# holds the outputs, as the cluster's workers come up; then (or later in a run at once) it runs elsewhere and
# finds the outputs gone, so the model is computed again.
HOST_WAIT_SECONDS = 60.0
WORKER_VIEW_SECONDS = 2.0  # how long the driver trusts its list of live workers and their hosts


class RunStopped(Exception):
    """Driver.request_stop() was called (e.g. from a notebook): the run ended early, cleanly."""


class Action(Enum):
    RUN = "run"
    ARCHIVE = "archive"


@dataclass
class Event:
    """Something worth telling the user, as it happens."""

    kind: EventKind
    job: str
    detail: str = ""


@dataclass
class Outcome:
    registered: int = 0
    new: int = 0
    already_archived: int = 0
    todo: int = 0
    archived: int = 0
    model_runs: int = 0
    archive_attempts: int = 0
    interrupted: bool = False
    failures: dict[str, str] = field(default_factory=dict)  # job name → reason
    # right now: models submitted to run, archivals submitted, archivals waiting out a backoff
    running: int = 0
    archiving: int = 0
    retrying: int = 0
    # for the ETA (dashboard/eta.py): mean seconds a model keeps a worker slot (run + archival), and the slots
    model_cost: float | None = None
    worker_slots: int = 0


def _duration(manifest: Manifest) -> float:
    started, ended = manifest.provenance.get("started"), manifest.provenance.get("ended")
    if not started or not ended:
        return 0.0
    return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()


class Driver:
    def __init__(self, config: Config, plan: Plan, ledger: Ledger, on_event: Callable[[Event], None] | None = None,
                 on_progress: Callable[[Outcome], None] | None = None) -> None:
        self.config = config
        self.plan = plan
        self.ledger = ledger
        self.on_event = on_event or (lambda event: None)
        self.on_progress = on_progress or (lambda outcome: None)
        self.outcome = Outcome()
        self._jobs: dict[int, JobRef] = {}
        self._run_start = 0  # attempts after this id are this run's (ledger/tries.py counts them)
        self._queue: deque[tuple[Action, int]] = deque()
        self._delayed: list[tuple[float, int]] = []  # (ready at, job id) archival retries
        self._in_flight: dict[Future, tuple[Action, int]] = {}
        self._models_in_flight = 0  # the RUN entries of _in_flight, kept on submit and completion
        self.lease: GridLease | None = None
        self._pinned: dict[Future, list[str]] = {}  # archival futures bound to the workers holding the outputs
        self._worker_hosts: dict[str, str] = {}  # worker address -> host name, asked once per worker
        self._staged_by: dict[int, str] = {}  # job id -> the worker whose scratch holds its outputs (this run)
        self._freed: list[str] = []  # workers whose model ended in this pass of the loop: the next models' places
        self._live_workers: tuple[float, frozenset[str]] = (float("-inf"), frozenset())  # (when seen, addresses)
        self._loop_started = 0.0
        self._durations: deque[float] = deque(maxlen=200)  # recent model runtimes, seconds
        self._archive_seconds: deque[float] = deque(maxlen=200)  # recent archivals' durations, seconds
        self._stop_requested = threading.Event()
        self.client: Any = None  # the cluster's distributed Client while the loop runs

    def request_stop(self) -> None:
        """Stop soon (from another thread): cancel what is in flight, settle the ledger, close the cluster."""
        self._stop_requested.set()

    # ---- the public entry point -----------------------------------------------------------

    def run(self, states: tuple[JobState, ...] = RUN_STATES) -> Outcome:
        # Before the lease or any ledger write: an archive that cannot be written, a ledger that is not
        # there, executables gone - PreflightFailed (exit 2), no model started, nothing recorded.
        preflight(self.config, self.plan, self.ledger)
        with GridLease(self.ledger, self.config.grid.name) as lease:
            self.lease = lease
            if lease.took_over:
                self.on_event(Event(EventKind.RESUMED, "-",
                                    f"took over the grid from a stopped driver ({lease.took_over})"))
            return self._run(states)

    def _run(self, states: tuple[JobState, ...]) -> Outcome:
        # We hold the lease: anything still marked running belongs to a driver that is gone.
        self.ledger.recover_grid(self.config.grid.name, "interrupted: the previous driver stopped")
        self._run_start = run_start(self.ledger)
        registration = self.ledger.register_grid(self.config.grid.name, self.plan.specs.values())
        self.outcome.registered = registration.total
        self.outcome.new = registration.new
        self.outcome.already_archived = registration.archived
        self.on_event(Event(EventKind.REGISTERED, "-",
                            f"{registration.total} models, {registration.archived} already archived"))
        wanted = set(self.plan.specs)
        todo = [job for job in self.ledger.jobs(self.config.grid.name, states) if job.model_hash in wanted]
        self.outcome.todo = len(todo)
        if not todo:
            return self.outcome
        for job in todo:
            self._jobs[job.id] = job
            self._queue.append(self._first_action(job))
        try:
            with start_cluster(self.config, self.lease) as cluster:
                cluster.client.register_plugin(WorkerResources(cluster.retirement_drain_seconds))
                register_dashboard(cluster.client, self.config.database, self.config.grid.name)
                if cluster.dashboard_link:
                    self.on_event(Event(EventKind.DASHBOARD, "-", cluster.dashboard_link))
                    self.on_event(Event(EventKind.GRID_PAGE, "-", page_link(cluster.dashboard_link) or ""))
                self.client = cluster.client
                self.outcome.worker_slots = cluster.worker_slots
                try:
                    self._loop(cluster)
                except BaseException:
                    self._stop_work(cluster)
                    raise
                finally:
                    self.client = None
        except BaseException as exc:
            # Leaving the with-block closed the cluster, so no task can still write: settle now.
            self.outcome.interrupted = isinstance(exc, (KeyboardInterrupt, RunStopped))
            self._settle_unfinished()
            raise
        return self.outcome

    def _stop_work(self, cluster: ClusterHandle) -> None:
        """Cancel what is in flight and kill running KOSMA-tau steps before the cluster closes."""
        for future in self._in_flight:
            future.cancel()
        try:
            cluster.client.run(kill_running_models, wait=True, on_error="ignore")
        except Exception:  # best effort while shutting down
            log.debug("could not reach every worker to stop its models", exc_info=True)

    def _first_action(self, job: JobRef) -> tuple[Action, int]:
        if job.state in (JobState.COMPUTED, JobState.FAILED_STORAGE) and job.staged_dir:
            return (Action.ARCHIVE, job.id)
        if job.state in (JobState.COMPUTED, JobState.FAILED_STORAGE, JobState.FAILED_MODEL):
            self.ledger.requeue(job.id, f"resubmitted after {job.state}")
        return (Action.RUN, job.id)

    # ---- the loop -------------------------------------------------------------------------------

    def _window(self, cluster: ClusterHandle) -> int:
        # No more models than slots by default: a model sent ahead to a busy worker starts there the moment
        # the one before it ends, and the archival then pinned to that worker waits for the whole of it.
        return self.config.run.max_in_flight or cluster.worker_slots

    def _loop(self, cluster: ClusterHandle) -> None:
        window = self._window(cluster)
        self._loop_started = time.monotonic()
        while self._queue or self._delayed or self._in_flight:
            if self.lease is not None and self.lease.lost.is_set():
                raise LedgerError("another driver took this grid over; stopping")
            if self._stop_requested.is_set():
                raise RunStopped("stopped on request")
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                _, job_id = heapq.heappop(self._delayed)
                self._queue.appendleft((Action.ARCHIVE, job_id))
            if self._may_submit(window):
                while self._may_submit(window):
                    self._submit(cluster, *self._queue.popleft())
                self._count_in_flight()
                self.on_progress(self.outcome)
            self._freed.clear()  # a worker freed earlier may hold another model by now
            if cluster.maintain is not None:
                cluster.maintain()
            self._drop_archivals_on_lost_workers(cluster)
            timeout = max(0.05, self._delayed[0][0] - time.monotonic()) if self._delayed else None
            if cluster.maintain is not None or self._pinned:
                timeout = min(timeout or 2.0, 2.0)  # wake up to look after the cluster
            timeout = min(timeout or 0.25, 0.25)  # and to notice a stop request soon
            if not self._in_flight:
                time.sleep(timeout or 0.05)
                continue
            try:
                done, _ = wait(list(self._in_flight), timeout=timeout, return_when="FIRST_COMPLETED")
            except TimeoutError:  # distributed's wait raises where concurrent.futures returns
                continue
            for future in done:
                action, job_id = self._in_flight.pop(future)
                if action is Action.RUN:
                    self._models_in_flight -= 1
                    self._run_finished(cluster, future, job_id)
                else:
                    self._archive_finished(future, job_id)
                self._pinned.pop(future, None)
                future.release()  # keep no per-job futures after completion
            self._count_in_flight()
            self.on_progress(self.outcome)

    def _may_submit(self, window: int) -> bool:
        """The window bounds the models in flight only: an archival (queued first) goes at once, or the
        archivals of finished models would hold back the next models while they wait on the network."""
        if not self._queue:
            return False
        if self._queue[0][0] is Action.ARCHIVE:
            return True
        return self._models_in_flight < window

    def _count_in_flight(self) -> None:
        self.outcome.running = self._models_in_flight
        self.outcome.archiving = len(self._in_flight) - self._models_in_flight
        self.outcome.retrying = len(self._delayed)
        self.outcome.model_cost = mean_cost(self._durations, self._archive_seconds)

    def _submit(self, cluster: ClusterHandle, action: Action, job_id: int, manifest: Manifest | None = None) -> None:
        job = self._jobs[job_id]
        settings = self.plan.settings
        future: Future[Manifest] | Future[ArchiveResult]
        if action is Action.RUN:
            self.outcome.model_runs += 1
            self._models_in_flight += 1
            # To the worker whose model just ended, if any: it is free once that model's archival has left
            # its thread. The scheduler's own choice can be a busy worker (a second's wait for work
            # stealing, measured: benchmarks/bench_scale.py). Loose: anywhere, if that worker is gone.
            place: dict[str, Any] = {"workers": [self._freed.pop()], "allow_other_workers": True} \
                if self._freed else {}
            future = cluster.client.submit(
                run_model, ModelJob(job_id, self.plan.specs[job.model_hash], self._expected_runtime()), settings,
                key=f"run-{job.name}-{job_id}-{self.outcome.model_runs}", pure=False,
                resources=cluster.model_resources, **place,
            )
        else:
            staged: Manifest | tuple[int, str]
            if manifest is not None:
                staged, workers = manifest, self._archive_workers(cluster, manifest.worker, None)
            else:  # a retry, or a job staged before this run: the ledger says where
                ref = self.ledger.job(job_id)
                staged = (job_id, ref.staged_dir or "")
                workers = self._archive_workers(cluster, self._staged_by.get(job_id), ref.staged_host)
                if workers == [] and self._may_still_come(ref.staged_host):
                    heapq.heappush(self._delayed, (time.monotonic() + 1.0, job_id))
                    return
                if workers == []:
                    self.on_event(Event(EventKind.RETRY_ARCHIVE, job.name, f"no worker on {ref.staged_host}, whose "
                                        "scratch holds its outputs; archiving from another worker"))
            self.outcome.archive_attempts += 1
            pin: dict[str, Any] = {"workers": workers, "allow_other_workers": False} if workers else {}
            future = cluster.client.submit(
                archive_job, staged, settings, key=f"archive-{job.name}-{job_id}-{self.outcome.archive_attempts}",
                pure=False, priority=10, resources=cluster.archive_resources, **pin,
            )
            if workers:
                self._pinned[future] = workers
        self._in_flight[future] = (action, job_id)

    def _archive_workers(self, cluster: ClusterHandle, worker: str | None, host: str | None) -> list[str] | None:
        """Where an archival may run: None anywhere (outputs in a shared place: shared scratch or
        scratch.staging); else the worker that staged them, or any live worker on the host whose node-local
        scratch holds them ([]: none now). ``worker``: the one that staged them, when this run knows it."""
        if cluster.shared_scratch or self.plan.settings.staging_root is not None:
            return None
        if worker is not None and (host is None or worker in self._live(cluster)):
            return [worker]  # its scratch may be private to its SLURM job (job_container/tmpfs): that worker first
        if host is None:
            return None
        return sorted(address for address in self._live(cluster) if self._worker_hosts.get(address) == host)

    def _may_still_come(self, host: str | None) -> bool:
        """A worker on ``host`` may yet join: none was seen there in this run, and the run is young (its
        cluster still coming up). A host whose workers were seen and are gone is not waited for."""
        return (host not in self._worker_hosts.values()
                and time.monotonic() - self._loop_started < HOST_WAIT_SECONDS)

    def _live(self, cluster: ClusterHandle) -> frozenset[str]:
        """The live workers, their host names known (asked once per new worker, at most every few seconds)."""
        seen, workers = self._live_workers
        if time.monotonic() - seen < WORKER_VIEW_SECONDS:
            return workers
        workers = frozenset(cluster.client.scheduler_info(n_workers=-1).get("workers", {}))
        unknown = [address for address in workers if address not in self._worker_hosts]
        if unknown:
            self._worker_hosts.update(cluster.client.run(socket.gethostname, workers=unknown, on_error="ignore"))
        self._live_workers = (time.monotonic(), workers)
        return workers

    def _drop_archivals_on_lost_workers(self, cluster: ClusterHandle) -> None:
        """A pinned archival whose workers are all gone would wait forever: submit it again, to another
        worker on that host if there is one, else anywhere.

        If the staged outputs went with the worker's node (node-local scratch), that archival finds them
        gone and the model is computed again; on shared scratch nothing is lost.
        """
        if not self._pinned:
            return
        alive = self._live(cluster)
        for future, workers in list(self._pinned.items()):
            if future.done() or future not in self._in_flight:
                self._pinned.pop(future, None)
            elif not alive.intersection(workers):
                self._pinned.pop(future)
                _, job_id = self._in_flight.pop(future)
                future.cancel()
                name = self._jobs[job_id].name
                if self.ledger.job(job_id).state == JobState.ARCHIVED:  # it finished as the worker left
                    self.outcome.archived += 1
                    self.on_event(Event(EventKind.ARCHIVED, name))
                    continue
                self.ledger.end_open_archive_attempts([job_id], "interrupted: the worker left")
                self.on_event(Event(EventKind.RETRY_ARCHIVE, name, "the worker holding its outputs left; archiving "
                                    "from another worker"))
                self._queue.appendleft((Action.ARCHIVE, job_id))

    def _expected_runtime(self) -> float | None:
        """Configured, else the median of this run's finished models plus that of their archivals, which
        follow on the same worker when the outputs are node-local (None until a model finished)."""
        if self.config.run.expected_model_seconds is not None:
            return self.config.run.expected_model_seconds
        if not self._durations:
            return None
        archival = statistics.median(self._archive_seconds) if self._archive_seconds else 0.0
        return statistics.median(self._durations) + archival

    def _run_finished(self, cluster: ClusterHandle, future: Future, job_id: int) -> None:
        name = self._jobs[job_id].name
        if future.status == "finished":
            manifest: Manifest = future.result()
            self._durations.append(_duration(manifest))
            if manifest.worker is not None:
                self._staged_by[job_id] = manifest.worker
                if self._takes_next_model(cluster, manifest):
                    self._freed.append(manifest.worker)
            self._submit(cluster, Action.ARCHIVE, job_id, manifest)
            return
        error = future.exception()
        if isinstance(error, ModelFailed):
            self.outcome.failures[name] = error.reason
            self.on_event(Event(EventKind.FAILED_MODEL, name, error.reason))
            return
        # The worker died or the task broke outside the model: the run is lost, not failed.
        record_lost_run(self.ledger, job_id, f"run lost: {type(error).__name__}")
        lost = tries_since(self.ledger, job_id, self._run_start).lost_runs
        if lost <= LOST_RUN_RETRIES:
            self.on_event(Event(EventKind.RERUN, name, f"run lost ({type(error).__name__}); running it again"))
            self._queue.append((Action.RUN, job_id))
        else:
            reason = f"run lost {lost} times: {type(error).__name__}: {error}"
            self.outcome.failures[name] = reason
            self.on_event(Event(EventKind.LOST, name, reason))

    def _takes_next_model(self, cluster: ClusterHandle, manifest: Manifest) -> bool:
        """Whether the worker of this run still takes a model long enough to finish the next one, with a
        margin for the time until it gets it (a worker refusing one sends it elsewhere in any case).

        Never with model resources (archive workers): once a suggested worker is gone, distributed's
        fallback for a loose restriction ignores resource restrictions too, and the model could land on an
        archive worker."""
        if cluster.model_resources is not None:
            return False
        if manifest.takes_models_for is None:
            return True
        needed = self._expected_runtime() or 0.0
        return manifest.takes_models_for > needed + max(10.0, 0.1 * needed)

    def _archive_finished(self, future: Future, job_id: int) -> None:
        name = self._jobs[job_id].name
        if future.status == "finished":
            try:
                result: ArchiveResult = future.result(timeout=5)
                self._archive_seconds.append(result.seconds)  # its time on the worker, not its wait in the queue
            except Exception:  # noqa: BLE001 - the result was lost with its worker after the commit (Dask
                pass  # runs it again, finding the scratch gone); the job is archived, only the ETA misses one sample
            self.outcome.archived += 1
            self.outcome.failures.pop(name, None)
            self._staged_by.pop(job_id, None)
            self.on_event(Event(EventKind.ARCHIVED, name))
            return
        error = future.exception()
        if self.ledger.job(job_id).state == JobState.ARCHIVED:
            # The commit went through although its acknowledgement was lost (connection dropped).
            self.outcome.archived += 1
            self.on_event(Event(EventKind.ARCHIVED, name))
            return
        if isinstance(error, StorageFailed) and error.staged_missing:
            self._staged_by.pop(job_id, None)
            self.ledger.requeue(job_id, f"staged outputs gone: {error.reason}")
            self.on_event(Event(EventKind.RERUN, name, "staged outputs are gone; computing the model again"))
            self._queue.append((Action.RUN, job_id))
            return
        reason = error.reason if isinstance(error, StorageFailed) else f"archival task lost: {type(error).__name__}"
        self._record_storage_failure(job_id, reason)
        # An archival lost before it reached the ledger wrote no attempt and is not counted: its worker died,
        # which the archival did not cause, and the next try on another worker is.
        tries = tries_since(self.ledger, job_id, self._run_start).archivals
        # permanent (foreign files at the archive paths; permission denied, read-only file system, no space or
        # quota): only the user can fix it, a retry would fail the same way. Transient and unknown ones: backoff.
        permanent = isinstance(error, StorageFailed) and error.permanent
        if tries < self.config.run.archive_attempts and not permanent:
            delay = self._backoff(tries)
            self.on_event(Event(EventKind.RETRY_ARCHIVE, name, f"{reason}; archiving again in {delay:.1f} s"))
            heapq.heappush(self._delayed, (time.monotonic() + delay, job_id))
        else:
            self.outcome.failures[name] = reason
            self.on_event(Event(EventKind.FAILED_STORAGE, name, reason))

    def _record_storage_failure(self, job_id: int, reason: str) -> None:
        """The task could not always write failed_storage itself (ledger down): do it here."""
        try:
            if self.ledger.job(job_id).state == JobState.COMPUTED:
                self.ledger.fail_archive(job_id, None, reason)
            # The task has ended: an attempt it could not close (database down) must not stay open.
            self.ledger.end_open_archive_attempts([job_id], reason)
        except LedgerError:
            pass

    def _backoff(self, attempt: int) -> float:
        """Seconds before archival ``attempt`` + 1: initial * 2^(attempt-1) capped at max, plus up to
        ``initial`` of jitter so that retries of many jobs do not stampede the archive. (The driver's
        loop waits; no call is retried in place, so tenacity's retry loop has no place here.)"""
        initial, cap = self.config.run.archive_backoff_initial, self.config.run.archive_backoff_max
        return min(cap, initial * 2 ** (attempt - 1)) + random.uniform(0, initial)

    def _settle_unfinished(self) -> None:
        """After an interruption: nothing stays ``running`` and no attempt stays open."""
        job_ids = list(self._jobs)
        self.ledger.requeue_running(job_ids, "interrupted: the driver stopped")
        self.ledger.end_open_archive_attempts(job_ids, "interrupted: the driver stopped")
