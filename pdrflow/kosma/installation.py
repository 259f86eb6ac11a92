"""A KOSMA-tau installation: where the executables and input data are, and their identity."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import KosmaTauConfig
from ..errors import ConfigError, shown
from ..grid import Identity
from ..storage.base import sha256_file
from .inputs import load_input_templates
from .templates import InputTemplates

STANDIN_PDR = "pdrflow-standin-pdrexe"
STANDIN_ONION = "pdrflow-standin-onionexe"
INPUT_DIRS = ("pdrinpdata", "onioninpdata", "In")


@dataclass(frozen=True)
class Installation:
    home: Path
    pdr_executable: Path
    onion_executable: Path
    helpers: tuple[Path, ...]  # placed in scratch; the PDR code runs them itself
    chem_rates: Path
    standin: bool
    identity: Identity
    templates: InputTemplates

    def onion_input(self, species: str) -> Path:
        return self.home / "onioninpdata" / f"ONION3.INP.{species}"


def _standin_executable(name: str) -> Path:
    # The console scripts live beside the interpreter of the environment pdrflow is installed in.
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else (Path(w) if (w := shutil.which(name)) else None)
    if found is None:
        raise ConfigError(f"kosma_tau.standin: the stand-in executable {name} is not installed (pip install pdrflow)")
    return found


def _executable(home: Path, value: str, key: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else home / path
    if not path.exists():
        raise ConfigError(f"kosma_tau.{key}: {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"kosma_tau.{key}: {path} is not a regular file")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"kosma_tau.{key}: {path} is not executable")
    return path


def resolve_installation(config: KosmaTauConfig) -> Installation:
    """Check the installation named in the config; raise ConfigError naming what is wrong."""
    try:
        return _resolve_installation(config)
    except OSError as exc:  # a path too long, a symlink loop, an unreadable directory
        where = f" {shown(str(exc.filename))}" if exc.filename else ""
        raise ConfigError(f"kosma_tau.home: cannot use{where} ({exc.strerror})") from None


def _resolve_installation(config: KosmaTauConfig) -> Installation:
    if config.standin:
        from .standin import standin_home

        home = standin_home()
        pdr, onion = _standin_executable(STANDIN_PDR), _standin_executable(STANDIN_ONION)
        helpers: tuple[Path, ...] = ()
    else:
        assert config.home is not None  # checked by the config
        home = config.home
        if not home.is_dir():
            raise ConfigError(f"kosma_tau.home: {home} is not a directory")
        pdr = _executable(home, config.pdr_executable, "pdr_executable")
        onion = _executable(home, config.onion_executable, "onion_executable")
        helpers = tuple(home / name for name in config.helper_executables if (home / name).is_file())
    for directory in ("pdrinpdata", "onioninpdata"):
        if not (home / directory).is_dir():
            raise ConfigError(f"kosma_tau.home: {home / directory} is missing")
    chem_name = config.chem_rates or ("chem_rates_standin.dat" if config.standin else "chem_rates.dat")
    if "/" in chem_name or chem_name in (".", ".."):
        raise ConfigError(f"kosma_tau.chem_rates: give a file name inside {home / 'pdrinpdata'}")
    chem_rates = home / "pdrinpdata" / chem_name
    if not chem_rates.is_file():
        raise ConfigError(f"kosma_tau.chem_rates: {chem_rates} does not exist")
    for species in config.onion_species:
        if not (home / "onioninpdata" / f"ONION3.INP.{species}").is_file():
            raise ConfigError(
                f"kosma_tau.onion_species: no onion input {home / 'onioninpdata' / f'ONION3.INP.{species}'}"
            )
    templates = load_input_templates(config.pdrnew_template, config.json_template, config.model_grid)
    try:
        identity = Identity(
            pdr_sha256=sha256_file(pdr)[1],
            onion_sha256=sha256_file(onion)[1],
            chem_rates_sha256=sha256_file(chem_rates)[1],
            inputs_sha256=templates.sha256,
        )
    except OSError as exc:
        raise ConfigError(f"kosma_tau: cannot read {exc.filename}: {exc.strerror}") from None
    return Installation(home, pdr, onion, helpers, chem_rates, config.standin, identity, templates)


@dataclass(frozen=True)
class ExecutableVersion:
    revision: str | None
    compiled: str | None
    output: str


def executable_version(executable: Path, timeout: float = 10.0) -> ExecutableVersion:
    """Run ``<exe> --version`` and pick out the revision and compile-date lines.

    It runs in an empty temporary directory with a short timeout: an executable that ignored
    the flag and started a model must neither write into the caller's directory nor hold it up.
    """
    with tempfile.TemporaryDirectory(prefix="pdrflow-version-") as empty:
        try:
            done = subprocess.run(
                [str(executable), "--version"], capture_output=True, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL, cwd=empty, errors="replace",
            )
            output = (done.stdout + done.stderr)[:4000]
        except (OSError, subprocess.TimeoutExpired) as exc:
            return ExecutableVersion(None, None, f"--version failed: {type(exc).__name__}")
    revision = re.search(r"Revision:\s*(\S+)", output)
    compiled = re.search(r"compiled\s+the\s+(.+?)\s*$", output, re.MULTILINE)
    return ExecutableVersion(
        revision.group(1) if revision else None, compiled.group(1) if compiled else None, output
    )
