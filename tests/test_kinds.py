"""Storage and cluster kinds are written down once (config.KINDS): loading, the reference, the factories."""

from __future__ import annotations

import typing
from pathlib import Path

from helpers import base_config, write_config

from pdrflow import config as config_module
from pdrflow.config import KINDS, kind_factory, load_config
from pdrflow.reference import SECTIONS
from pdrflow.storage import open_storage
from pdrflow.storage.local import LocalStorage


def _members(union: object) -> set[type]:
    annotated, *_ = typing.get_args(union)  # Annotated[A | B, Field(...)]
    return set(typing.get_args(annotated))


def test_the_unions_pydantic_and_mypy_see_are_the_registry() -> None:
    assert _members(config_module.StorageConfig) == {kind.model for kind in KINDS["storage"].values()}
    assert _members(config_module.ClusterConfig) == {kind.model for kind in KINDS["cluster"].values()}


def test_every_kind_has_its_factory_and_its_reference_section() -> None:
    documented = {path for _, path, _ in SECTIONS}
    for section, kinds in KINDS.items():
        for name in kinds:
            assert callable(kind_factory(section, name)), (section, name)
            assert f"{section}.{name}" in documented


def test_open_storage_goes_through_the_registry(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "run.yaml", base_config(tmp_path, home=None)))
    with open_storage(config.storage) as storage:
        assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "archive"
