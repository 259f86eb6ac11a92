"""The ``pdrflow`` command: one module per command (or pair of commands), registered here.

Exit codes: 0 all archived (verified), 1 some jobs failed, 2 bad input or the run could not
start (ledger schema out of date, grid held by another driver), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import dask.config
from rich.console import Console

from ..config import load_config
from ..errors import ConfigError, LedgerError
from . import db, inspect, migrate, products, run, verify
from .common import EXIT_BAD_INPUT, open_ledger_of, worker_safety_config

__all__ = ["build_parser", "main", "open_ledger_of", "worker_safety_config"]

_COMMAND_MODULES = (run, inspect, verify, products, migrate, db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdrflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in _COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pdrflow").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # distributed configures its loggers when first imported (by the driver): quiet by default.
    dask.config.set({"logging.distributed": "debug" if args.verbose else "warning"})
    dask.config.set(worker_safety_config())
    console = Console(stderr=False, highlight=False)
    try:
        config = load_config(args.config) if getattr(args, "needs_config", True) else None
        code: int = args.handler(config, args, console)
        return code
    except (ConfigError, LedgerError) as exc:
        # Nothing was run: bad input, or the ledger refused to start (old schema, grid held).
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
