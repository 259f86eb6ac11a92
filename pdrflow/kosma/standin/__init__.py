"""pdrflow's stand-in for KOSMA-tau. It is NOT KOSMA-tau.

Two small programs (``pdrflow-standin-pdrexe``, ``pdrflow-standin-onionexe``) that honour
KOSMA-tau's file contract — they read ``PDRNEW.INP``/``pdr_config.json`` and ``ONION3.INP``, write
every output file under the contract's names, and onion modifies ``pdrstruct_s.hdf5`` — with depth
profiles from simple analytic PDR scalings (physics.py). They exist for the quickstart and the
tests. Faults can be injected on any worker through the environment:

- ``PDRFLOW_STANDIN_SECONDS``: seconds one PDR run takes (default 0)
- ``PDRFLOW_STANDIN_FAIL``: ``pdr``, ``onion`` or ``onion:<species>``: that step exits non-zero
- ``PDRFLOW_STANDIN_EXIT``: the exit code of a failing step (default 1)
- ``PDRFLOW_STANDIN_OUTPUT_MB``: pad ``pdrstruct_s.hdf5`` to about that many MB
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BANNER = "pdrflow stand-in for KOSMA-tau -- NOT KOSMA-tau: analytic scalings for demos and tests"
COMPILED = "Nov 28 2026 at 12:00:00"


def standin_home() -> Path:
    """The stand-in's KOSMA-tau home: pdrinpdata/, onioninpdata/, In/, templates/."""
    return Path(__file__).resolve().parent / "home"


def revision() -> str:
    try:
        return f"standin-{metadata.version('pdrflow')}"
    except metadata.PackageNotFoundError:
        return "standin-0+unknown"


def print_version(program: str) -> int:
    print(f"{program}: {BANNER}")
    print(f"Revision: {revision()}")
    print(f"compiled the {COMPILED}")
    return 0


class KnobError(Exception):
    pass


@dataclass(frozen=True)
class Faults:
    seconds: float
    fail: str | None
    exit_code: int
    output_mb: float

    def fails(self, step: str, species: str | None = None) -> bool:
        if self.fail is None:
            return False
        if step == "pdr":
            return self.fail == "pdr"
        return self.fail == "onion" or (species is not None and self.fail == f"onion:{species}")


def faults_from_environment() -> Faults:
    def number(name: str, default: float) -> float:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise KnobError(f"{name}={raw!r} is not a number") from None
        if value < 0 or value != value:
            raise KnobError(f"{name}={raw!r} must be >= 0")
        return value

    fail = os.environ.get("PDRFLOW_STANDIN_FAIL") or None
    if fail is not None and not (fail in ("pdr", "onion") or fail.startswith("onion:")):
        raise KnobError(f"PDRFLOW_STANDIN_FAIL={fail!r}: use pdr, onion or onion:<species>")
    raw_exit = os.environ.get("PDRFLOW_STANDIN_EXIT", "1")
    try:
        exit_code = int(raw_exit)
    except ValueError:
        raise KnobError(f"PDRFLOW_STANDIN_EXIT={raw_exit!r} is not an integer") from None
    if not 1 <= exit_code <= 255:
        raise KnobError(f"PDRFLOW_STANDIN_EXIT={raw_exit!r} must be 1..255")
    return Faults(number("PDRFLOW_STANDIN_SECONDS", 0.0), fail, exit_code, number("PDRFLOW_STANDIN_OUTPUT_MB", 0.0))


def fail_with(message: str, code: int) -> int:
    print(f"ERROR: {message}", flush=True)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    return code
