"""Where log records go: one terminal handler (rich, above any live line) and, for a run, a log file.

The terminal gets pdrflow's warnings (everything with ``-v``); the libraries' records (distributed,
tornado, bokeh: the dashboard's request errors, worker and nanny chatter; paramiko: a transport
thread's traceback when the SFTP server goes away, which pdrflow reports and retries itself) go to
the run's log file only, unless ``-v`` asks for everything on the terminal too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from ..config import Config

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# distributed configures these itself on import (a stderr handler each, propagation off): taken back
LIBRARY_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio", "paramiko")


class _TerminalFilter(logging.Filter):
    """The terminal sees pdrflow's records; the libraries' only with -v."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or not record.name.startswith(LIBRARY_LOGGERS)


class _Terminal(RichHandler):
    """The one terminal handler; its console can be swapped for a live display's."""


def setup_logging(verbose: bool) -> None:
    """In ``main()``, before any command: the terminal handler on stderr."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Terminal)]:
        root.removeHandler(handler)
    terminal = _Terminal(console=Console(stderr=True, highlight=False), show_path=False, markup=False,
                         log_time_format="%H:%M:%S", level=logging.DEBUG if verbose else logging.WARNING)
    terminal.addFilter(_TerminalFilter(verbose))
    root.addHandler(terminal)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # INFO reaches the log file, not the terminal
    logging.getLogger("pdrflow").setLevel(logging.DEBUG if verbose else logging.INFO)


def take_library_loggers() -> None:
    """Undo distributed's own stderr handlers (set when it is imported): its records reach the root
    handlers, so the terminal filter and the log file decide where they go."""
    for name in [name for name in logging.root.manager.loggerDict if name.startswith(LIBRARY_LOGGERS)]:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def log_file_path(config: Config) -> Path:
    """``run.log_file``; relative to the config file's directory; null: ``pdrflow-<grid>.log`` there."""
    configured = config.run.log_file
    path = Path(configured) if configured is not None else Path(f"pdrflow-{config.grid.name}.log")
    return path if path.is_absolute() else config.path.parent / path


@contextmanager
def run_logging(path: Path, live_console: Console | None) -> Iterator[None]:
    """For one run: every record (INFO and up, DEBUG with -v) appended to ``path``; the terminal
    handler prints on ``live_console`` (the progress display's), so a log line lands above the live line."""
    take_library_loggers()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    to_file = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    to_file.setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.INFO)
    root.addHandler(to_file)
    terminals = [h for h in root.handlers if isinstance(h, _Terminal)]
    saved = [h.console for h in terminals]
    if live_console is not None:
        for handler in terminals:
            handler.console = live_console
    try:
        yield
    finally:
        for handler, console in zip(terminals, saved, strict=True):
            handler.console = console
        root.removeHandler(to_file)
        to_file.close()
