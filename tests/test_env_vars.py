"""``PDRFLOW__SECTION__KEY`` environment variables override pdrflow.yaml's defaults, under the run's YAML,
through the real command (`pdrflow list`, which reads the config the run reads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers import base_config, write_config

# density 2e3 is between tenth-dex steps: "33.0103" under grid.naming pdrflow, "33" under predecessor
PDRFLOW_NAME = "100_33.0103_-10_10_00"
PREDECESSOR_NAME = "100_33_-10_10_00"


def _config(tmp_path: Path, **grid: Any) -> Path:
    config = base_config(tmp_path / "run", home=None)
    config["grid"].update(density=[2.0e3], fuv=[10.0])
    for key, value in grid.items():
        if value is None:
            config["grid"].pop(key)
        else:
            config["grid"][key] = value
    return write_config(tmp_path / "grid.yaml", config)


def _list(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`pdrflow list --json` with exactly these variables: none of the calling shell's PDRFLOW__ leak in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PDRFLOW__", "DASK_PDRFLOW__"))}
    return subprocess.run([sys.executable, "-m", "pdrflow", "list", str(config), "--json"], capture_output=True,
                          text=True, timeout=120, env={**clean, **env, "COLUMNS": "200"}, stdin=subprocess.DEVNULL,
                          check=False)


def _names(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [model["name"] for model in json.loads(done.stdout)["models"]]


def test_an_env_variable_overrides_the_default(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _names(_list(config)) == [PDRFLOW_NAME]
    assert _names(_list(config, PDRFLOW__GRID__NAMING="predecessor")) == [PREDECESSOR_NAME]
    # `pdrflow run` reads the same config: its dry run plans the predecessor's name
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PDRFLOW__", "DASK_PDRFLOW__"))}
    planned = subprocess.run([sys.executable, "-m", "pdrflow", "run", str(config), "--dry-run"], capture_output=True,
                             text=True, timeout=120, env={**clean, "PDRFLOW__GRID__NAMING": "predecessor",
                                                          "COLUMNS": "200"}, check=False)
    assert planned.returncode == 0, planned.stderr
    assert f"compute (1): {PREDECESSOR_NAME}" in planned.stdout


def test_the_run_yaml_overrides_the_env_variable(tmp_path: Path) -> None:
    config = _config(tmp_path, naming="pdrflow")
    assert _names(_list(config, PDRFLOW__GRID__NAMING="predecessor")) == [PDRFLOW_NAME]


def test_the_env_variable_overrides_dask_config(tmp_path: Path) -> None:
    """dask's own DASK_PDRFLOW__... still works, and PDRFLOW__... is read after it."""
    config = _config(tmp_path)
    assert _names(_list(config, DASK_PDRFLOW__GRID__NAMING="predecessor")) == [PREDECESSOR_NAME]
    assert _names(_list(config, DASK_PDRFLOW__GRID__NAMING="predecessor",
                        PDRFLOW__GRID__NAMING="pdrflow")) == [PDRFLOW_NAME]


def test_values_are_read_as_yaml(tmp_path: Path) -> None:
    config = _config(tmp_path, fuv=None)  # the axis only from the environment: a YAML list
    assert _names(_list(config, PDRFLOW__GRID__FUV="[10.0, 100.0]")) == [PDRFLOW_NAME, "100_33.0103_-10_20_00"]
    refused = _list(_config(tmp_path, fuv=[10.0, 100.0]), PDRFLOW__RUN__MAX_MODELS="1")  # an integer, as in YAML
    assert refused.returncode == 2
    assert "2 models (2 fuv) is more than run.max_models = 1" in refused.stderr
    allowed = _list(_config(tmp_path, fuv=[10.0, 100.0]), PDRFLOW__RUN__MAX_MODELS="2")
    assert allowed.returncode == 0, allowed.stderr


def test_a_kind_key_names_its_kind(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _list(config, PDRFLOW__CLUSTER__LOCAL__THREADS_PER_WORKER="1").returncode == 0
    done = _list(config, PDRFLOW__CLUSTER__THREADS_PER_WORKER="1")
    assert done.returncode == 2
    assert done.stderr.strip() == ("pdrflow: error: PDRFLOW__CLUSTER__THREADS_PER_WORKER: a cluster key is set per "
                                   "kind: PDRFLOW__CLUSTER__LOCAL__THREADS_PER_WORKER")


def test_hostile_or_mistaken_values_are_refused_in_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    marker = tmp_path / "evaluated"
    cases = {
        "PDRFLOW__RUN__MAX_MODLES": ("3", "PDRFLOW__RUN__MAX_MODLES: unknown key run.max_modles "
                                          "(did you mean 'max_models'?)"),
        "PDRFLOW__RUNS__MAX_MODELS": ("3", "PDRFLOW__RUNS__MAX_MODELS: unknown section 'runs' (did you mean 'run'?)"),
        "PDRFLOW__SCRATCH__ROOT": ('"/tmp/a\\x00b"', "PDRFLOW__SCRATCH__ROOT: control characters are not allowed"),
        "PDRFLOW__RUN__ARCHIVE_ATTEMPTS": ("[1", "PDRFLOW__RUN__ARCHIVE_ATTEMPTS: invalid YAML at line 1"),
        "PDRFLOW__GRID__NAMING": (f'!!python/object/apply:os.system ["touch {marker}"]',
                                  "PDRFLOW__GRID__NAMING: invalid YAML"),
        "PDRFLOW__DATABASE__PASSWORD": ("hunter2", "PDRFLOW__DATABASE__PASSWORD: passwords are never configuration; "
                                                   "set PDRFLOW_DB_PASSWORD"),
        "PDRFLOW__RUN__ARCHIVE_ATTEMPTS__X": ("1", "PDRFLOW__RUN__ARCHIVE_ATTEMPTS__X: run.archive_attempts is a "
                                                     "single value, not a mapping of keys"),
        "PDRFLOW__RUN__MAX_MODELS": ("lots", "run.max_models: Input should be a valid integer, unable to parse string "
                                             "as an integer (got 'lots') (from PDRFLOW__RUN__MAX_MODELS)"),
    }
    for name, (value, message) in cases.items():
        done = _list(config, **{name: value})
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pdrflow: error: {message}"), (name, done.stderr)
        assert done.stdout == ""
    assert not marker.exists()
    # a password in a URL from the environment: refused like one in the file, and never echoed
    document = yaml.safe_load(config.read_text())
    del document["database"]  # else the YAML's url wins
    config.write_text(yaml.safe_dump(document))
    done = _list(config, PDRFLOW__DATABASE__URL="postgresql+psycopg://me:s3cr3t-canary@db.example/pdrflow")
    assert done.returncode == 2
    assert "must not contain a password" in done.stderr and "s3cr3t-canary" not in done.stderr + done.stdout


def test_unrelated_pdrflow_variables_are_left_alone(tmp_path: Path) -> None:
    """Single-underscore variables (PDRFLOW_DB_PASSWORD, the stand-in's knobs) are not config keys."""
    assert _names(_list(_config(tmp_path), PDRFLOW_STANDIN_SECONDS="0", PDRFLOW_DB_PASSWORD="x")) == [PDRFLOW_NAME]
