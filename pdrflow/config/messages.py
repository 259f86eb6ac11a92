"""A pydantic validation error as the one line a user reads: the key, what is wrong, a "did you mean"."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError

from ..errors import shown
from .kinds import KIND_MODELS, KIND_SECTIONS


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in ("password", "path")]


def _format_validation_error(error: ValidationError, root: type[BaseModel]) -> str:
    messages: list[str] = []
    for item in error.errors():
        keys = [str(part) for part in item["loc"] if not isinstance(part, int)]
        kind_model = None
        if len(keys) > 2 and keys[0] in KIND_SECTIONS:
            # Discriminated unions add the tag ("local") to the location: drop it, keep its model.
            kind_model = KIND_MODELS.get((keys[0], keys[1]))
            keys = [keys[0], *keys[2:]]
        where = _location(item["loc"])
        if item["type"] == "extra_forbidden":
            model = kind_model if kind_model is not None and len(keys) == 2 else _model_at(root, keys[:-1])
            hint = _did_you_mean(keys[-1], _known_keys(model)) if model else ""
            message = f"{where}: unknown key{hint}"
        elif item["type"] == "missing":
            message = f"{where}: required key is missing"
        elif item["type"] == "string_pattern_mismatch" and ".".join(keys) in _PATTERN_HINTS:
            message = f"{where}: {_PATTERN_HINTS['.'.join(keys)]} (got {shown(item.get('input'))})"
        else:
            value = item.get("input")
            got = f" (got {shown(value)})" if isinstance(value, str | int | float) else ""
            text = str(item["msg"]).removeprefix("Value error, ")
            message = f"{where}: {text}{got}" if "got " not in text else f"{where}: {text}"
        if message not in messages:
            messages.append(message)
    # One line: the first few problems are enough to fix (a list of 10^6 bad values is not).
    more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
    return "; ".join(messages[:3]) + more


# What a value matching each pattern looks like, instead of pydantic's regular expression.
_PATTERN_HINTS = {
    "grid.name": "must be letters, digits and . _ + - starting with a letter or digit (it names the archive directory)",
    "kosma_tau.onion_species": "a species name is letters, digits, + and - (like CO, C+, 13CO)",
    "kosma_tau.network_species": "a species name is letters, digits, +, - and * (like CO, C+, 13CO)",
    "storage.host": "must be a host name, address or ssh_config alias (no spaces, not starting with -)",
    "storage.username": "must be a user name (letters, digits, . _ - @, not starting with -)",
    "storage.root": "must be an absolute directory on the server (starting with /)",
}


def _location(loc: tuple[int | str, ...]) -> str:
    """("grid", "density", 1) -> "grid.density[1]"; discriminator tags and union members dropped."""
    text = ""
    parts = list(loc)
    if len(parts) > 2 and parts[0] in KIND_SECTIONS:
        parts = [parts[0], *parts[2:]]
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-plain[", "list[", "dict[")) or part in ("int", "float", "str", "none"):
            continue  # pydantic's names for union members, not keys of the config
        else:
            text += ("." if text else "") + str(part)
    return text or "config"


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model
