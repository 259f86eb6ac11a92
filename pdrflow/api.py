"""Drive a grid from Python, e.g. a Jupyter notebook.

    grid = pdrflow.Grid.open("my-grid.yaml")
    run = grid.submit()                      # returns at once; the driver works in the background
    run.progress()                           # a live progress widget (ipywidgets) or text line
    for future in concurrent.futures.as_completed(run.futures.values()):
        ...                                  # a JobResult, or raises JobFailed
    run.wait()
    grid.status()                            # a pandas DataFrame, one row per job, from the ledger
    grid.resubmit().wait()                   # failed jobs again
    grid.outputs("100_30_-10_10_00")         # a model's archived HDF5 profiles and line tables

It is the same driver as ``pdrflow run`` (same ledger, lease, window, archival backoff); only the
reporting differs. A run still going when the interpreter exits is stopped cleanly first: its
cluster is closed and nothing is left ``running`` in the ledger.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .states import FAILED_STATES, STATES, EventKind, JobState
from .status import GridStatus, grid_status, job_table

if TYPE_CHECKING:
    import pandas as pd

    from .driver import Driver, Event, Outcome
    from .export.writer import ExportResult
    from .results import ModelOutputs

@dataclass(frozen=True)
class JobResult:
    """A job that ended archived (in this run or before it)."""

    name: str
    state: JobState = JobState.ARCHIVED


class JobFailed(Exception):
    """A job that did not end archived. ``state`` is its state in the ledger, the same that
    ``pdrflow status`` shows (failed_model, failed_storage, or pending for a run lost to dead
    workers too often or stopped before it finished); ``reason`` says why."""

    def __init__(self, name: str, state: JobState, reason: str) -> None:
        super().__init__(f"{name}: {state}: {reason}")
        self.name, self.state, self.reason = name, state, reason


class GridRun:
    """One background run of the driver over a grid; ``futures`` hold each model's outcome."""

    def __init__(self, grid: Grid, resubmit: bool) -> None:
        from .cluster import serve_unless_driver
        from .driver import Driver
        from .plan import RESUBMIT_STATES, RUN_STATES, plan_run

        # In a script every task of an allocation runs (cluster.kind allocation): the scheduler's and the
        # workers' tasks serve here and end their process; the driver's goes on.
        serve_unless_driver(grid.config)
        self.grid = grid
        self.plan = plan_run(grid.config)  # every check before anything is written: ConfigError here
        self.futures: dict[str, Future[JobResult]] = {spec.name: Future() for spec in self.plan.specs.values()}
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.dashboard_link: str | None = None  # the Dask dashboard of the run's cluster
        self.grid_page_link: str | None = None  # its pdrflow page: the grid map, live from the ledger
        self._client: Any = None
        self._listeners: list[Callable[[Outcome], None]] = []
        self._ledger = grid._open_ledger(patience=300.0)
        self._driver: Driver = Driver(grid.config, self.plan, self._ledger, on_event=self._on_event,
                                      on_progress=self._on_progress)
        self._states = RESUBMIT_STATES if resubmit else RUN_STATES
        self._thread = threading.Thread(target=self._drive, name=f"pdrflow-driver-{grid.name}", daemon=True)
        self._thread.start()
        _RUNS.add(self)

    # ---- what a notebook calls ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until the run ends; re-raise what stopped the driver, if anything did."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the grid {self.grid.name} is still running")
        if self.error is not None:
            raise self.error
        return self.outcome

    def stop(self, timeout: float | None = 120.0) -> None:
        """Stop early: in-flight models are cancelled and requeued, the cluster is closed."""
        self._driver.request_stop()
        self._thread.join(timeout)

    def as_completed(self) -> Iterator[Future[JobResult]]:
        return as_completed(self.futures.values())

    def progress(self) -> Any:
        """A live progress bar: an ipywidgets widget in a notebook (returned; display it), else text."""
        try:
            import ipywidgets as widgets
        except ImportError:
            self._listeners.append(lambda outcome: print(_progress_line(outcome), end="\r", flush=True))
            return None
        bar = widgets.IntProgress(min=0, max=max(1, len(self.futures)), description=self.grid.name)
        label = widgets.HTML()

        def update(outcome: Outcome) -> None:
            bar.max = max(1, outcome.todo)
            bar.value = outcome.archived + len(outcome.failures)
            bar.bar_style = "danger" if outcome.failures else ("success" if bar.value == bar.max else "")
            label.value = _progress_line(outcome)

        self._listeners.append(update)
        if self.outcome is not None:
            update(self.outcome)
        return widgets.VBox([bar, label])

    @property
    def client(self) -> Any:
        """The run's distributed Client while the run is going (None before the cluster is up and after)."""
        return self._client if self.running else None

    # ---- the driver thread ----------------------------------------------------------------------

    def _drive(self) -> None:
        from .driver import RunStopped

        try:
            self.outcome = self._driver.run(self._states)
        except RunStopped:
            self.outcome = self._driver.outcome
        except BaseException as exc:  # noqa: BLE001 - handed to wait() in the notebook's thread
            self.error = exc
            self.outcome = self._driver.outcome
        finally:
            try:
                self._settle_futures()
            finally:
                self._client = None
                self._ledger.close()

    def _on_event(self, event: Event) -> None:
        if event.kind == EventKind.REGISTERED:
            self._settle_futures(only_final=True)
        elif event.kind == EventKind.GRID_PAGE:
            self.grid_page_link = event.detail or None
        elif event.kind == EventKind.DASHBOARD:
            self.dashboard_link = event.detail
            self._client = self._driver.client
        elif event.kind.job_state == JobState.ARCHIVED:
            _resolve(self.futures.get(event.job), JobResult(event.job))
        elif (state := event.kind.job_state) is not None:
            _fail(self.futures.get(event.job), JobFailed(event.job, state, event.detail))

    def _on_progress(self, outcome: Outcome) -> None:
        self._client = self._driver.client
        for listener in list(self._listeners):
            try:
                listener(outcome)
            except Exception:  # noqa: BLE001 - a broken widget must not stop the grid
                self._listeners.remove(listener)

    def _settle_futures(self, only_final: bool = False) -> None:
        """Resolve futures from the ledger: at the start those already final, at the end all."""
        for job in self._ledger.jobs(self.grid.name):
            future = self.futures.get(job.name)
            if future is None or future.done():
                continue
            state = JobState(job.state)
            if state == JobState.ARCHIVED:
                _resolve(future, JobResult(job.name))
            elif state in FAILED_STATES and (not only_final or state not in self._states):
                _fail(future, JobFailed(job.name, state, job.reason or ""))
            elif not only_final:
                _fail(future, JobFailed(job.name, state, job.reason or "the run stopped before it finished"))


def _resolve(future: Future[JobResult] | None, result: JobResult) -> None:
    if future is not None and not future.done():
        future.set_result(result)


def _fail(future: Future[JobResult] | None, error: JobFailed) -> None:
    if future is not None and not future.done():
        future.set_exception(error)


def _progress_line(outcome: Outcome) -> str:
    done = outcome.archived + len(outcome.failures)
    return (f"{done}/{outcome.todo} done: archived {outcome.archived}, in flight {outcome.running}, "
            f"archiving {outcome.archiving}, failed {len(outcome.failures)}")


class Grid:
    """A grid as described by one config file, and its ledger."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def open(cls, path: str | Path) -> Grid:
        return cls(load_config(path))

    @property
    def name(self) -> str:
        return self.config.grid.name

    def submit(self) -> GridRun:
        """Run every model not archived yet, in the background."""
        return GridRun(self, resubmit=False)

    def resubmit(self) -> GridRun:
        """Failed jobs too: archival only where staged outputs remain, else a rerun."""
        return GridRun(self, resubmit=True)

    def counts(self) -> GridStatus:
        return grid_status(self.config.database, self.name)

    def status(self) -> pd.DataFrame:
        """One row per job: name, state, reason, the axes, varied parameters, attempts."""
        import pandas as pd

        rows = job_table(self.config.database, self.name)
        frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["name", "state", "reason"])
        if "state" in frame:
            frame["state"] = pd.Categorical(frame["state"], categories=list(STATES))
        return frame.set_index("name") if "name" in frame else frame

    def outputs(self, job: str) -> ModelOutputs:
        """A model's archived outputs (HDF5 profiles, onion line tables), read from the archive."""
        from .results import open_archive

        with open_archive(self.config) as archive:
            return archive.model_outputs(job)

    def export(self, out: str | Path, ratios: list[str] | None = None, allow_holes: bool = False) -> ExportResult:
        """The grid as ``grid.nc`` (xarray), ``grid.csv``/``.parquet`` and a pdrtpy model set in ``out``, as
        ``pdrflow export``; raises pdrflow.export.HolesRefused (the rest written) when a plane has holes."""
        from .export import export_grid

        return export_grid(self.config, Path(out), ratios=ratios, allow_holes=allow_holes)

    def _open_ledger(self, patience: float = 20.0) -> Any:
        from .ledger.open import open_ledger

        return open_ledger(self.config.database, patience=patience)


# Runs still going at interpreter exit are stopped before Python tears threads down; a weak set,
# so a finished run is not kept alive by this.
_RUNS: weakref.WeakSet[GridRun] = weakref.WeakSet()


@atexit.register
def _stop_runs_at_exit() -> None:
    for run in list(_RUNS):
        if run.running:
            run.stop(timeout=60.0)
