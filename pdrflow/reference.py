"""The config reference (docs/config-reference.md), generated from the config models themselves.

Keys, types and limits come from the pydantic models in ``config/models.py`` and, for each storage
and cluster kind, in its own module (``config.KIND_MODELS``, found from pdrflow.yaml); defaults and their
explanations from the shipped ``pdrflow.yaml`` (its comments), else from the field's own comment
in the model's class body. A test regenerates the page and compares, so the page cannot drift.

    python -m pdrflow.reference > docs/config-reference.md
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import config as config_module

# (heading, YAML path of the section, model) in the order a config file is usually written
SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("grid", "grid", config_module.GridConfig),
    ("kosma_tau", "kosma_tau", config_module.KosmaTauConfig),
    ("database", "database", config_module.DatabaseConfig),
    *((f"{section} (kind: {name})", f"{section}.{name}", model)
      for (section, name), model in config_module.KIND_MODELS.items()),
    ("scratch", "scratch", config_module.ScratchConfig),
    ("run", "run", config_module.RunConfig),
    ("results", "results", config_module.ResultsConfig),
    ("results.structure", "results.structure", config_module.StructureMapping),
    ("results.chemistry", "results.chemistry", config_module.ChemistryMapping),
    ("results.linebt", "results.linebt", config_module.LinebtMapping),
)
NOT_YAML_KEYS = frozenset({"password", "path"})  # from the environment / not a key of the file


def yaml_comments(text: str) -> dict[str, str]:
    """``section.key`` → the comment at the end of its line in the defaults file."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        dotted = ".".join(k for _, k in stack[1:])  # drop the top-level "pdrflow"
        if "#" in rest:
            comments[dotted] = rest.split("#", 1)[1].strip()
    return comments


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the comment at the end of its line in the class body that declares it (the model's
    own, else the nearest base's: a kind inherits the keys every kind of its section has)."""
    comments: dict[str, str] = {}
    for declaring in reversed(model.__mro__):  # bases first, so the model's own comment wins
        if not (isinstance(declaring, type) and issubclass(declaring, BaseModel)) or declaring is BaseModel:
            continue
        tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(declaring)).readline)
        line_field: dict[int, str] = {}
        for token in tokens:
            if token.type == tokenize.NAME and token.start[1] == 4 and token.string in model.model_fields:
                line_field.setdefault(token.start[0], token.string)
            elif token.type == tokenize.COMMENT and token.start[0] in line_field:
                comments[line_field[token.start[0]]] = token.string.lstrip("#").strip()
    return comments


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        if set(typing.get_args(annotation)) == {int, float, str}:
            return "number"  # a YAML number or a numeric string ("1e3")
        names = [_type_name(a) for a in typing.get_args(annotation)]
        names = [n for n in names if n != "null"] + (["null"] if "null" in names else [])
        return " or ".join(dict.fromkeys(names))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(annotation)[1])}"
    return {type(None): "null", str: "text", int: "integer", float: "number", bool: "true/false", Path: "path",
            }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for name, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
        if getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
        if getattr(item, "max_length", None):
            parts.append(f"at most {item.max_length} characters")
    return ", ".join(parts)


def _default(defaults: dict[str, Any], path: str, key: str, info: FieldInfo) -> str:
    node: Any = defaults
    for part in [*path.split("."), key]:
        if not isinstance(node, dict) or part not in node:
            node = None if info.is_required() else info.get_default(call_default_factory=True)
            if info.is_required() and key != "kind":
                return "required"
            break
        node = node[part]
    if key == "kind":
        return f"`{path.split('.')[-1]}`"
    return f"`{yaml.safe_dump(node, default_flow_style=True).strip().removesuffix('...').strip()}`"


def _own_first(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The model's fields, those its class body declares first (a kind's own keys before the ones every kind
    of its section has), each group in declaration order; ``kind`` stays first."""
    own = set(inspect.get_annotations(model))
    fields = list(model.model_fields.items())
    return sorted(fields, key=lambda item: (item[0] != "kind", item[0] not in own))


def render() -> str:
    defaults_text = config_module.DEFAULTS_FILE.read_text()
    defaults = yaml.safe_load(defaults_text)["pdrflow"]
    yaml_notes = yaml_comments(defaults_text)
    out = ["# Config reference", "",
           "<!-- generated by `python -m pdrflow.reference`; tests/test_docs.py fails when it is stale -->", "",
           "A run's YAML file has these sections; every key not given takes the default shown (the shipped",
           "`pdrflow/pdrflow.yaml`, which `~/.config/dask/pdrflow.yaml` or `PDRFLOW__SECTION__KEY` environment",
           "variables override, as for any dask setting). Unknown keys are refused with a suggestion.",
           "Relative paths are relative to the config file. Passwords are never keys: the database password",
           (f"comes from `{config_module.DB_PASSWORD_ENV[0]}`, the SFTP password from "
            f"`{config_module.SFTP_PASSWORD_ENV[0]}`."), ""]
    for heading, path, model in SECTIONS:
        notes = source_comments(model)
        doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")  # its own, not an inherited one
        out += [f"## {heading}", ""]
        if doc and not doc.startswith(model.__name__ + "("):
            out += [" ".join(doc.split("\n\n")[0].split()), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key, info in _own_first(model):
            if key in NOT_YAML_KEYS:
                continue
            meaning = yaml_notes.get(f"{path}.{key}") or notes.get(key, "")
            limits = _limits(info)
            if limits:
                meaning = f"{meaning} ({limits})" if meaning else limits
            type_name = _type_name(info.annotation)
            meaning = meaning.replace("|", "\\|")  # a pipe would end the table cell
            out.append(f"| `{key}` | {type_name} | {_default(defaults, path, key, info)} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
