"""The ``pdrflow`` command: one module per command (or pair of commands), registered here.

Exit codes, the same for every command: 0 all good, 1 some jobs failed or archived files are
damaged, 2 bad input or nothing to look at (a grid never run, an unknown job), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import dask.config
from rich.console import Console

from ..config import load_config
from ..errors import ConfigError, LedgerError
from . import clean, db, inspect, listing, migrate, products, run, verify
from .common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, open_ledger_of, worker_safety_config
from .logs import setup_logging

__all__ = ["build_parser", "main", "open_ledger_of", "worker_safety_config"]

_COMMAND_MODULES = (run, listing, inspect, verify, products, migrate, db, clean)
DESCRIPTION = """Run grids of KOSMA-tau PDR models with Dask, a ledger and a separate archival.

exit codes (every command): 0 all good; 1 some jobs failed or archived files damaged;
2 bad input or nothing to look at (a grid never run, an unknown job); 130 interrupted"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdrflow", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"pdrflow {_version()}",
                        help="print pdrflow's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of the commands below; `pdrflow COMMAND --help` for its arguments")
    for module in _COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)  # one terminal handler (cli/logs.py); a run adds its log file
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
    except KeyboardInterrupt:
        # Ctrl-C in any command (a long listing, a slow database): the contract's 130, not a traceback.
        print("pdrflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _version() -> str:
    try:
        return version("pdrflow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
