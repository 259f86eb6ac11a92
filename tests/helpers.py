"""Shared test helpers: a null KOSMA-tau home, config files, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

NULL_PDR = """#!/bin/sh
# null KOSMA-tau PDR code: writes the contract's files and nothing else
if [ "$1" = "--version" ]; then echo "null pdrexe"; echo "Revision: null-1"; echo "compiled the Nov 28 2026 at 12:00:00"; exit 0; fi
echo "null pdrexe: not KOSMA-tau"
if [ "$NULL_PDR_FAIL" = "1" ]; then echo "null pdrexe: failing on request"; exit 7; fi
sum=$(cksum < PDRNEW.INP)
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do
  echo "$f $sum" > "pdroutput/$f"
done
echo "mcdrt $sum" > Out/mrt.dat
"""

NULL_ONION = """#!/bin/sh
# null onion: reads the species from ONION3.INP, writes its six files, touches the structure file
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
read species < ONION3.INP
[ -f CTRL_IND ] || { echo "null onionexe: CTRL_IND missing"; exit 3; }
for f in "jerg_$species.smli" "jerg_$species.srli" "jtemp_$species.smli" "jtemp_$species.smlc" \\
         "linebt_$species.out" "ONION3_$species.OUT"; do
  echo "$species" > "onionoutput/$f"
done
echo "onion $species" >> "$1"
echo "null onionexe $species done"
"""

NULL_SPECIES = ("CO", "C+", "C", "O")


def write_null_home(root: Path, species: tuple[str, ...] = NULL_SPECIES) -> Path:
    for sub in ("pdrinpdata", "onioninpdata", "In"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in (("pdrexe", NULL_PDR), ("onionexe", NULL_ONION)):
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    (root / "pdrinpdata" / "chem_rates_test.dat").write_text("null rates\n")
    for s in species:
        (root / "onioninpdata" / f"ONION3.INP.{s}").write_text(f"{s}\n")
    return root


def base_config(run_dir: Path, *, home: Path | None, grid: str = "testgrid", **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "grid": {"name": grid, "metallicity": [1.0], "density": [1.0e3, 1.0e4], "mass": [0.1], "fuv": [10.0, 100.0]},
        "kosma_tau": {"standin": True, "onion_species": list(NULL_SPECIES)}
        if home is None
        else {"home": str(home), "chem_rates": "chem_rates_test.dat", "onion_species": list(NULL_SPECIES)},
        "database": {"url": f"sqlite:///{run_dir / 'ledger.sqlite'}"},
        "storage": {"kind": "local", "root": str(run_dir / "archive")},
        "cluster": {"kind": "local", "n_workers": 2},
        "scratch": {"root": str(run_dir / "scratch")},
        "run": {"archive_backoff_initial": 0.2, "archive_backoff_max": 1.0},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the real ``pdrflow`` command in a child process and capture everything."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pdrflow", *args], capture_output=True, text=True, timeout=timeout, env=full_env,
        stdin=subprocess.DEVNULL, check=False,
    )


def status(config_path: Path) -> dict[str, Any]:
    done = cli("status", str(config_path), "--json")
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def verify(config_path: Path) -> dict[str, Any]:
    done = cli("verify", str(config_path), "--json")
    document = json.loads(done.stdout)
    document["returncode"] = done.returncode
    return document


def ledger_rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query, params).fetchall()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
