"""A storage or cluster kind is its module plus its defaults in pdrflow.yaml: found, checked, light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import yaml
from helpers import base_config, write_config
from pydantic import BaseModel

import pdrflow
from pdrflow.config import KINDS, Config, load_config
from pdrflow.config.kinds import KindError, discover, kind_factory
from pdrflow.config.sections import ClusterKind, KindSection, StorageKind
from pdrflow.reference import SECTIONS
from pdrflow.storage import open_storage
from pdrflow.storage.local import LocalStorage, LocalStorageConfig

PACKAGE = Path(pdrflow.__file__).parent
REPO = PACKAGE.parent
DECLARED = {"storage": (StorageKind, "open"), "cluster": (ClusterKind, "start")}
HEAVY = ("paramiko", "distributed", "dask_jobqueue")


def _shipped_kinds(section: str) -> list[str]:
    # Read here, not through pdrflow.config: the test must see a kind the discovery might miss.
    shipped = yaml.safe_load((PACKAGE / "pdrflow.yaml").read_text())["pdrflow"][section]
    return [name for name in shipped if name != "kind"]


@pytest.mark.parametrize("section", ["storage", "cluster"])
def test_every_kind_in_the_yaml_is_a_module_declaring_its_model_and_factory(section: str) -> None:
    declared, factory = DECLARED[section]
    names = _shipped_kinds(section)
    assert names, section
    for name in names:
        assert (PACKAGE / section / f"{name}.py").is_file(), f"pdrflow.yaml lists {section}.{name}: no module"
        kind = importlib.import_module(f"pdrflow.{section}.{name}").KIND
        assert isinstance(kind, declared), (section, name)
        assert issubclass(kind.config, KindSection) and issubclass(kind.config, BaseModel)
        assert typing.get_args(kind.config.model_fields["kind"].annotation) == (name,), (section, name)
        assert callable(getattr(kind, factory))
        assert kind_factory(section, name) is getattr(kind, factory)
    assert list(KINDS[section]) == names  # found, in the YAML's order: nothing else, nothing missing


def test_the_config_unions_are_the_kinds_found() -> None:
    for section in ("storage", "cluster"):
        annotation = Config.model_fields[section].annotation
        assert set(typing.get_args(annotation)) == {kind.config for kind in KINDS[section].values()}, section
        assert Config.model_fields[section].discriminator == "kind"


def test_every_kind_has_its_reference_section() -> None:
    documented = {path for _, path, _ in SECTIONS}
    for section, kinds in KINDS.items():
        for name in kinds:
            assert f"{section}.{name}" in documented


def test_a_kind_without_its_module_or_with_another_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KindError, match="lists storage kind 'nosuch', but there is no pdrflow.storage.nosuch"):
        discover("storage", StorageKind, ("local", "nosuch"))
    # A module whose model says another kind than its YAML key (a copied module, its literal not changed).
    copied = types.ModuleType("pdrflow.storage.copied")
    copied.KIND = StorageKind(config=LocalStorageConfig, open=LocalStorage)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pdrflow.storage.copied", copied)
    with pytest.raises(KindError, match=r"LocalStorageConfig.kind must be Literal\['copied'\]"):
        discover("storage", StorageKind, ("copied",))
    with pytest.raises(KindError, match=r"pdrflow.storage.local declares no KIND = ClusterKind\(\.\.\.\)"):
        discover("storage", ClusterKind, ("local",))  # a module without the KIND its section needs
    # A model without the keys every kind of its section has (what the rest of pdrflow, and mypy, may read).
    bare = types.ModuleType("pdrflow.storage.bare")

    class BareStorageConfig(KindSection):
        kind: typing.Literal["bare"]

    bare.KIND = StorageKind(config=BareStorageConfig, open=LocalStorage)  # type: ignore[arg-type, attr-defined]
    monkeypatch.setitem(sys.modules, "pdrflow.storage.bare", bare)
    with pytest.raises(KindError, match="BareStorageConfig must subclass StorageSection"):
        discover("storage", StorageKind, ("bare",))


def test_open_storage_opens_the_kind_found(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "run.yaml", base_config(tmp_path, home=None)))
    with open_storage(config.storage) as storage:
        assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "archive"


def _heavy_after(code: str) -> list[str]:
    loaded_names = "{m.split('.')[0] for m in sys.modules}"
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({loaded_names} & {set(HEAVY)!r})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_loading_a_config_imports_every_kind_module_but_none_of_their_heavy_libraries(tmp_path: Path) -> None:
    """Config loading imports every kind's module; paramiko, distributed and dask-jobqueue wait for their use."""
    config = base_config(tmp_path, home=None)
    config["storage"] = {"kind": "sftp", "host": "127.0.0.1", "root": "/srv/archive"}
    config["cluster"] = {"kind": "slurm"}
    path = write_config(tmp_path / "run.yaml", config)
    code = (f"import pdrflow.config, sys; config = pdrflow.config.load_config({str(path)!r})\n"
            "assert {'pdrflow.storage.sftp', 'pdrflow.cluster.slurm', 'pdrflow.cluster.allocation'} "
            "<= set(sys.modules)")
    assert _heavy_after(code) == []


def test_pdrflow_status_imports_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    path = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=None))
    code = ("import runpy, sys, contextlib, io\n"
            f"sys.argv = ['pdrflow', 'status', {str(path)!r}]\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    runpy.run_module('pdrflow', run_name='__main__')")
    assert _heavy_after(code) == []


def test_a_run_its_plan_refuses_imports_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    """``pdrflow run`` checks the plan (executables, templates, grid) before it imports the cluster's libraries:
    a refused config is told at once, not after a second of imports."""
    path = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=tmp_path / "no-such-home"))
    code = ("import runpy, sys, contextlib, io\n"
            f"sys.argv = ['pdrflow', 'run', {str(path)!r}]\n"
            "with contextlib.redirect_stderr(io.StringIO()) as said:\n"
            "    try:\n"
            "        runpy.run_module('pdrflow', run_name='__main__')\n"
            "    except SystemExit as exit:\n"
            "        assert exit.code == 2, exit.code\n"
            "assert 'kosma_tau.home' in said.getvalue() or 'pdr_executable' in said.getvalue(), said.getvalue()")
    assert _heavy_after(code) == []


@pytest.mark.parametrize("module", [f"pdrflow.{section}.{name}" for section in ("storage", "cluster")
                                    for name in _shipped_kinds(section)])
def test_a_kind_module_imported_first_finds_itself(module: str) -> None:
    """A kind module imported before pdrflow.config (a worker unpickling its config) must not meet itself half
    done in the discovery: it imports nothing of pdrflow.config but .sections at its top."""
    code = (f"import {module}\nfrom pdrflow.config import KINDS, load_config\n"
            f"assert {module}.KIND in [kind for kinds in KINDS.values() for kind in kinds.values()]")
    assert _heavy_after(code) == []
