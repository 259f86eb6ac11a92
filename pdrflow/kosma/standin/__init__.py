"""pdrflow's stand-in for KOSMA-tau. It is NOT KOSMA-tau.

Two small programs (``pdrflow-standin-pdrexe``, ``pdrflow-standin-onionexe``) that honour
KOSMA-tau's file contract — they read ``PDRNEW.INP``/``pdr_config.json`` and ``ONION3.INP``, write
every output file under the contract's names, and onion modifies ``pdrstruct_s.hdf5`` — with depth
profiles from simple analytic PDR scalings (physics.py) and a toy line transfer (lines.py). They
exist for the quickstart and the tests; their numbers are not science. Faults can be injected on
any worker through the environment:

- ``PDRFLOW_STANDIN_SECONDS``: seconds one PDR run takes (default 0)
- ``PDRFLOW_STANDIN_FAIL``: ``pdr``, ``onion`` or ``onion:<species>``: that step exits non-zero
- ``PDRFLOW_STANDIN_EXIT``: the exit code of a failing step (default 1)
- ``PDRFLOW_STANDIN_OUTPUT_MB``: pad ``pdrstruct_s.hdf5`` to about that many MiB
- ``PDRFLOW_STANDIN_SKIP``: comma-separated ``pdroutput/`` file names the PDR run does not write
  (as the real code leaves some out, depending on IHDFOUT, IFUVMETH, IDUSTMET)

Exit codes of both programs: 0 success, 2 missing/malformed input or knob, 3 PDRNEW.INP and
pdr_config.json disagree (pdrexe), ``PDRFLOW_STANDIN_EXIT`` for an injected failure.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BANNER = "pdrflow stand-in for KOSMA-tau -- NOT KOSMA-tau: analytic scalings for demos and tests"
# Fixed per release so that --version output (recorded as provenance) is reproducible.
COMPILED = "Nov 28 2026 at 12:00:00"
EXIT_BAD_INPUT = 2
EXIT_INCONSISTENT = 3

__all__ = ["BANNER", "COMPILED", "EXIT_BAD_INPUT", "EXIT_INCONSISTENT", "Faults", "KnobError", "fail_with",
           "faults_from_environment", "print_version", "revision", "standin_home"]


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
    print("This is pdrflow's stand-in, not KOSMA-tau; for science use a KOSMA-tau installation.")
    print(f"Revision: {revision()}")
    print(f"compiled the {COMPILED}")
    return 0


class KnobError(Exception):
    """A PDRFLOW_STANDIN_* environment variable has a value we cannot use."""


@dataclass(frozen=True)
class Faults:
    seconds: float
    fail: str | None
    exit_code: int
    output_mb: float
    skip: frozenset[str] = frozenset()  # pdroutput/ files not written

    def fails(self, step: str, species: str | None = None) -> bool:
        if self.fail is None:
            return False
        if step == "pdr":
            return self.fail == "pdr"
        return self.fail == "onion" or (species is not None and self.fail == f"onion:{species}")


def _non_negative(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise KnobError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise KnobError(f"{name}={raw!r} must be a finite number >= 0")
    return value


SKIPPABLE = ("pdrout.hdf", "pdrstruct_s.hdf5", "pdrchem_c.hdf5", "chemchk.out", "CTRL_IND")


def _skipped_outputs() -> frozenset[str]:
    raw = os.environ.get("PDRFLOW_STANDIN_SKIP", "")
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    unknown = sorted(names - set(SKIPPABLE))
    if unknown:
        raise KnobError(f"PDRFLOW_STANDIN_SKIP: unknown output {', '.join(unknown)} (use {', '.join(SKIPPABLE)})")
    return names


def faults_from_environment() -> Faults:
    fail = os.environ.get("PDRFLOW_STANDIN_FAIL", "").strip() or None
    if fail is not None and not (fail in ("pdr", "onion") or (fail.startswith("onion:") and len(fail) > 6)):
        raise KnobError(f"PDRFLOW_STANDIN_FAIL={fail!r}: use pdr, onion or onion:<species>")
    raw_exit = os.environ.get("PDRFLOW_STANDIN_EXIT", "").strip() or "1"
    try:
        exit_code = int(raw_exit)
    except ValueError:
        raise KnobError(f"PDRFLOW_STANDIN_EXIT={raw_exit!r} is not an integer") from None
    if not 1 <= exit_code <= 255:  # 0 would make a failure look like success
        raise KnobError(f"PDRFLOW_STANDIN_EXIT={raw_exit!r} must be 1..255")
    return Faults(_non_negative("PDRFLOW_STANDIN_SECONDS", 0.0), fail, exit_code,
                  _non_negative("PDRFLOW_STANDIN_OUTPUT_MB", 0.0), _skipped_outputs())


def fail_with(message: str, code: int) -> int:
    """Report an error where both a TEXTOUT reader (stdout) and a terminal user (stderr) see it."""
    print(f"ERROR: {message}", flush=True)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    return code
