"""A worker with a lifetime retires only once the outputs it holds are archived, or at its lifetime's end.

Dask's ``--lifetime`` closes a worker whatever it holds. On node-local scratch that loses the staged
outputs of a model whose archival has not yet run (it waits for a storage lease, or a retry's backoff),
and the model is computed again elsewhere. So the worker stops taking models ``drain_seconds`` before
its Dask lifetime (the run task refuses them, see ``stop_taking_models``), keeps serving the archivals of
its own outputs, and closes itself gracefully as soon as none is left. Dask's lifetime stays the
backstop: at its end the worker closes anyway, well before SLURM's walltime.

The state lives in the worker's ``WorkerResources`` plugin; the run and archive tasks report to it
through the functions of ``tasks/resources.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback

from .types import MANIFEST_FILE

log = logging.getLogger(__name__)

CHECK_EVERY_MS = 1000
CALLBACK_NAME = "pdrflow-retirement"


class Retirement:
    """One worker's retirement: when it stops taking models, and whether its staged outputs are archived."""

    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = max(0.0, drain_seconds)
        self._lock = threading.Lock()
        self._stop_models_at: float | None = None  # monotonic clock; None: the worker has no lifetime
        self._models_running = 0
        self._staged: set[str] = set()  # scratch dirs of this worker's outputs not yet archived
        self._closing: asyncio.Future[Any] | None = None  # kept: the event loop holds tasks only weakly
        self._stop_announced = False

    def start(self, worker: Any, lifetime_started: float) -> None:
        """``lifetime_started``: when Dask's lifetime timer began (monotonic); ``worker.lifetime`` is its
        length with the stagger already drawn."""
        lifetime = getattr(worker, "lifetime", None)
        if not lifetime:
            return
        self._stop_models_at = lifetime_started + float(lifetime) - self.drain_seconds
        if self.drain_seconds <= 0:
            return  # Dask's lifetime alone retires the worker
        callback = PeriodicCallback(lambda: self._close_when_drained(worker), CHECK_EVERY_MS)
        worker.periodic_callbacks[CALLBACK_NAME] = callback  # stopped by the worker's close
        callback.start()

    def seconds_to_stop(self) -> float | None:
        """Seconds until this worker takes no more models (negative once it stopped); None: no lifetime."""
        return None if self._stop_models_at is None else self._stop_models_at - time.monotonic()

    def model_started(self) -> None:
        with self._lock:
            self._models_running += 1

    def model_ended(self, staged_dir: str | None) -> None:
        """A model ended here; ``staged_dir``: its outputs, in node-local scratch, waiting for their archival."""
        with self._lock:
            self._models_running -= 1
            # kept only where the retirement check prunes them; elsewhere the set would grow with the grid
            if staged_dir is not None and self._stop_models_at is not None and self.drain_seconds > 0:
                self._staged.add(staged_dir)

    def given_up(self, staged_dir: str) -> None:
        """The archival of these outputs failed for good (no retry will come): do not wait for it."""
        with self._lock:
            self._staged.discard(staged_dir)

    def _holding(self) -> tuple[int, int]:
        """(models running here, staged outputs not yet archived): the worker is drained at (0, 0). A staged
        output is archived once its scratch dir is gone, by the archival here or on another worker of this node."""
        with self._lock:
            self._staged = {d for d in self._staged if (Path(d) / MANIFEST_FILE).is_file()}
            return self._models_running, len(self._staged)

    def _close_when_drained(self, worker: Any) -> None:
        remaining = self.seconds_to_stop()
        if self._closing is not None or remaining is None or remaining > 0:
            return
        running, waiting = self._holding()
        if not self._stop_announced:
            self._stop_announced = True
            stopped_at = datetime.now(UTC) + timedelta(seconds=remaining)  # this check runs up to a second later
            log.info("worker %s stopped taking models at %s UTC; it leaves once %d running model(s) end and %d "
                     "staged output(s) are archived", worker.address, stopped_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                     running, waiting)
        if running or waiting:
            return
        log.info("worker %s retires: its lifetime is up and its outputs are archived", worker.address)
        self._closing = asyncio.ensure_future(worker.close_gracefully(reason="pdrflow: lifetime reached, outputs archived"))
