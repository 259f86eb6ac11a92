"""environment.yml carries what pyproject.toml requires, under conda-forge's names.

No conda (nor conda-forge) is reachable from the test machines, so this compares the two files:
it cannot prove that conda resolves the environment, only that nothing pyproject.toml needs is
left out of it (or pinned differently)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Extras a user of the conda environment needs (the ledger databases, the notebook, parquet export).
USER_EXTRAS = ("postgres", "mysql", "notebook", "parquet")
# PyPI requirement name -> conda-forge package, only where they differ.
CONDA_NAMES = {
    "psycopg[binary]": "psycopg",  # the [binary] wheels are pip's; conda-forge's psycopg links its own libpq
}
# In environment.yml without being a pyproject requirement: the interpreter and the installer.
CONDA_ONLY = {"python", "pip"}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9._-]+(?:\[[A-Za-z0-9_,-]+\])?)\s*(.*?)\s*$")


def _split(requirement: str) -> tuple[str, str]:
    match = _REQUIREMENT.match(requirement.split(";")[0])
    assert match, requirement
    name, spec = match.groups()
    return CONDA_NAMES.get(name.lower(), name.lower()), spec.replace(" ", "")


def _pyproject() -> tuple[dict[str, str], dict[str, str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = dict(_split(r) for r in project["dependencies"])
    for extra in USER_EXTRAS:
        required.update(_split(r) for r in project["optional-dependencies"][extra])
    optional = dict(_split(r) for extra in project["optional-dependencies"].values() for r in extra)
    return required, optional


def _environment() -> dict[str, str]:
    document = yaml.safe_load((REPO / "environment.yml").read_text())
    assert document["channels"] == ["conda-forge"]
    entries = [entry for entry in document["dependencies"] if isinstance(entry, str)]
    return dict(_split(entry) for entry in entries)


def test_every_runtime_dependency_and_user_extra_is_in_environment_yml() -> None:
    required, _ = _pyproject()
    conda = _environment()
    missing = sorted(set(required) - set(conda))
    assert not missing, f"environment.yml lacks {missing} (pyproject.toml requires them)"
    pins = {name: (spec, conda[name]) for name, spec in required.items() if conda[name] != spec}
    assert not pins, f"environment.yml pins these differently from pyproject.toml (pyproject, conda): {pins}"


def test_environment_yml_holds_nothing_pyproject_does_not_know() -> None:
    _, optional = _pyproject()
    required, _ = _pyproject()
    conda = _environment()
    unknown = sorted(set(conda) - set(required) - set(optional) - CONDA_ONLY)
    assert not unknown, f"environment.yml installs {unknown}, which pyproject.toml does not list"
    pins = {name: (optional[name], spec) for name, spec in conda.items()
            if name in optional and name not in required and optional[name] != spec}
    assert not pins, f"extras pinned differently (pyproject, conda): {pins}"
    assert conda["python"] == ">=" + tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "requires-python"].removeprefix(">=")
