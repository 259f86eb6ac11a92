"""Every storage and cluster kind, found rather than listed: the YAML names them, each has its module.

The shipped ``pdrflow.yaml`` lists the kinds of a section as the sub-mappings of ``storage:`` and
``cluster:`` (their defaults). Kind ``K`` of section ``S`` is the module ``pdrflow.S.K``, which declares
``KIND = StorageKind(config=..., open=...)`` or ``ClusterKind(config=..., start=...)`` (``.sections``)
with its config model, whose ``kind: Literal["K"]`` is that key. So a new kind is its module and its
defaults in pdrflow.yaml, nothing else: config loading (the discriminated unions of ``.models``), the
environment's names, the error messages, the config reference and the factories
(``storage.open_storage``, ``cluster.start_cluster``) all read what is found here.

Config loading imports every kind module: a kind module imports its heavy dependencies (paramiko,
distributed, dask-jobqueue) inside the functions that use them, and nothing of ``pdrflow.config`` but
``.sections`` at module level (it may be imported while this module is still finding the kinds).
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import Field

from .sections import DB_PASSWORD_ENV, SHIPPED_DEFAULTS, ClusterKind, KindSection, StorageKind, password_variables

_K = TypeVar("_K", StorageKind, ClusterKind)


class KindError(ImportError):
    """pdrflow.yaml names a kind whose module is missing or does not declare it (a packaging mistake)."""


def yaml_kinds(section: str) -> tuple[str, ...]:
    """The kinds pdrflow.yaml lists for ``section``, in its order (the first is also the union's first)."""
    return tuple(name for name in SHIPPED_DEFAULTS["pdrflow"][section] if name != "kind")


def discover(section: str, declared: type[_K], names: tuple[str, ...] | None = None) -> dict[str, _K]:
    """The kinds of ``section`` (default: those pdrflow.yaml lists), each checked to declare itself."""
    found: dict[str, _K] = {}
    for name in yaml_kinds(section) if names is None else names:
        module_name = f"pdrflow.{section}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise KindError(f"pdrflow.yaml lists {section} kind {name!r}, but there is no {module_name}") from None
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, declared):
            half = getattr(module.__spec__, "_initializing", False)  # it is being imported: it imported us
            raise KindError(f"{module_name} declares no KIND = {declared.__name__}(...) for {section} kind {name!r}"
                            + (" yet: it imports pdrflow.config (not only pdrflow.config.sections) at its top, "
                               "import that inside its functions" if half else ""))
        if not issubclass(kind.config, declared.SECTION):  # the keys every kind has, and what mypy sees
            raise KindError(f"{module_name}: {kind.config.__name__} must subclass {declared.SECTION.__name__}")
        literal = kind.config.model_fields["kind"].annotation
        if typing.get_origin(literal) is not typing.Literal or typing.get_args(literal) != (name,):
            raise KindError(f"{module_name}: {kind.config.__name__}.kind must be Literal[{name!r}], the key of its "
                            f"defaults in pdrflow.yaml")
        found[name] = kind
    return found


STORAGE_KINDS: dict[str, StorageKind] = discover("storage", StorageKind)
CLUSTER_KINDS: dict[str, ClusterKind] = discover("cluster", ClusterKind)

Kind = StorageKind | ClusterKind
KINDS: dict[str, dict[str, StorageKind] | dict[str, ClusterKind]] = {"storage": STORAGE_KINDS, "cluster": CLUSTER_KINDS}
KIND_SECTIONS: tuple[str, ...] = tuple(KINDS)
KIND_MODELS: dict[tuple[str, str], type[KindSection]] = {
    (section, name): kind.config for section, kinds in KINDS.items() for name, kind in kinds.items()}


def discriminated(kinds: dict[str, StorageKind] | dict[str, ClusterKind]) -> Any:
    """The pydantic type of a kind section: its kinds' models, told apart by ``kind``."""
    models = tuple(kind.config for kind in kinds.values())
    if len(models) == 1:
        return models[0]  # a union of one is that model; pydantic refuses a discriminator on it
    return Annotated[typing.Union[models], Field(discriminator="kind")]  # noqa: UP007 - built at run time


def kind_factory(section: str, kind: str) -> Callable[..., Any]:
    """The factory of ``section``'s ``kind``: a storage kind's ``open``, a cluster kind's ``start``."""
    found = KINDS[section][kind]
    return found.open if isinstance(found, StorageKind) else found.start


def password_variable(section: str) -> str | None:
    """The variable to name when a password turns up in ``section``'s configuration: the database's, or that of
    the section's first kind holding one (storage: SFTP's). None: no kind of the section has a password."""
    if section == "database":
        return DB_PASSWORD_ENV[0]
    for (owner, _), model in KIND_MODELS.items():
        if owner == section and password_variables(model):
            return password_variables(model)[0]
    return None
