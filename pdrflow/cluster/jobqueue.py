"""Importing dask-jobqueue without losing the driver's Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading


def import_dask_jobqueue() -> None:
    """Import dask-jobqueue, keeping this process's SIGINT handler.

    Its runner module replaces the handler on import with a quiet ``sys.exit()``: Ctrl-C (or the
    SIGINT a batch system or a benchmark sends) then ends the process with status 0, skipping the
    driver's settling of its jobs, its summary and its 130. That handler is how SLURMRunner's
    scheduler and worker ranks stop, so only a driver imports through here. Python sets handlers in
    the main thread only, and the runner module does so on import: a driver thread (the notebook API)
    cannot import it at all, so the main thread does, before the driver thread starts."""
    if "dask_jobqueue.runner" in sys.modules:
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("dask-jobqueue must first be imported in the main thread "
                           "(pdrflow.cluster.serve_unless_driver does that before the driver starts)")
    handler = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, handler)
