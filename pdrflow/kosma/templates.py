"""Input templates in the predecessor's placeholder syntax: ``KT_VAR<name>_`` replaced by a value.

pdrflow ships its own ``PDRNEW.INP`` and ``pdr_config.json`` templates (``shipped_templates/``); a group
that customised the predecessor's templates names theirs in ``kosma_tau.pdrnew_template`` and
``kosma_tau.json_template``. Substitution is plain text replacement, never evaluation. A JSON
template may carry the predecessor's comments and trailing commas; what pdrflow writes is strict
JSON (comments removed, then parsed and written again).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, shown
from .parameters import ELEMENT_MASS_NUMBERS, PARAMETERS_BY_NAME

TemplateKind = Literal["pdrnew", "json"]
BUILTIN_DIR = Path(__file__).with_name("shipped_templates")
BUILTIN_FILES: dict[TemplateKind, str] = {"pdrnew": "PDRNEW.INP.template", "json": "pdr_config.json.template"}
CONFIG_KEYS: dict[TemplateKind, str] = {"pdrnew": "kosma_tau.pdrnew_template", "json": "kosma_tau.json_template"}
# A placeholder ends at the first "_" not followed by a name character, so names may hold "_"
# (KT_VARh2_h_coll_rates_); it never spans into a following placeholder.
PLACEHOLDER = re.compile(r"KT_VAR((?:(?!KT_VAR)[A-Za-z0-9_])+?)_(?![A-Za-z0-9])")
MAX_TEMPLATE_BYTES = 1 << 20
# Names besides the parameters: the network, the grid-mode line and the element abundances.
SPECIAL_NAMES = frozenset({"species", "grid"})
ELEMENT_PLACEHOLDERS = {f"elfrac{number}": key for key, number in ELEMENT_MASS_NUMBERS.items()}
KNOWN_NAMES = frozenset(PARAMETERS_BY_NAME) | SPECIAL_NAMES | frozenset(ELEMENT_PLACEHOLDERS)


class TemplateError(ValueError):
    """A template that cannot produce valid input (raised where the template is checked)."""


@dataclass(frozen=True)
class Template:
    kind: TemplateKind
    text: str
    source: str  # the file, or "pdrflow" for the shipped one

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(PLACEHOLDER.findall(self.text))

    def substitute(self, values: Mapping[str, str]) -> str:
        return PLACEHOLDER.sub(lambda match: values[match.group(1)], self.text)


@dataclass(frozen=True)
class InputTemplates:
    """What decides how a model's parameters become its input files, besides the parameters."""

    pdrnew: Template
    json: Template
    model_grid: bool  # write "*MODEL GRID <name>" on the grid-mode line

    @property
    def sha256(self) -> str:
        """One digest of both templates and the grid-mode flag: part of every model's hash."""
        document = {"pdrnew": self.pdrnew.sha256, "json": self.json.sha256, "model_grid": self.model_grid}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()

    def check_uses(self, varied: Iterable[str]) -> None:
        """A parameter the grid varies but a template never writes would give identical inputs for
        different models: refuse it before anything runs."""
        for template in (self.pdrnew, self.json):
            unused = sorted(set(varied) - template.placeholders)
            if unused:
                raise ConfigError(
                    f"{CONFIG_KEYS[template.kind]}: the grid varies {', '.join(unused)} but {template.source} has no "
                    f"placeholder for it (KT_VAR{unused[0]}_)"
                )


def load_template(kind: TemplateKind, path: Path | None) -> Template:
    """The configured template, or pdrflow's own; unknown placeholders are refused (exit 2)."""
    key = CONFIG_KEYS[kind]
    source = path if path is not None else BUILTIN_DIR / BUILTIN_FILES[kind]
    try:
        raw = source.read_bytes()[: MAX_TEMPLATE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {shown(str(source))} ({exc.strerror})") from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise ConfigError(f"{key}: {source} is larger than {MAX_TEMPLATE_BYTES} bytes; not a template")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {source} is not UTF-8 text") from None
    template = Template(kind, text, str(source) if path is not None else "pdrflow")
    unknown = sorted(template.placeholders - KNOWN_NAMES)
    if unknown:
        raise ConfigError(f"{key}: unknown placeholder KT_VAR{unknown[0]}_ in {source}"
                          + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    for needed in ("species",):
        if needed not in template.placeholders:
            raise ConfigError(f"{key}: {source} has no KT_VAR{needed}_ placeholder (the chemical network)")
    return template


# A JSON string literal (to its closing quote, or to the end of an unterminated one): copied untouched.
_STRING = r'"(?:[^"\\]|\\.?)*"?'
# Outside strings: a /* */ block (to the end if unclosed), or "//" or a single "/" to the end of the line.
_COMMENT = re.compile(_STRING + r"|(/\*.*?(?:\*/|\Z)|/[^\n]*)", re.S)
_TRAILING_COMMA = re.compile(_STRING + r"|(,)(?=[ \t\r\n]*[}\]])")


def _drop_outside_strings(pattern: re.Pattern[str], text: str) -> str:
    """``text`` without what ``pattern``'s group 1 matched; string literals (its other branch) stay."""
    return pattern.sub(lambda match: "" if match.group(1) else match.group(0), text)


def strict_json(text: str) -> str:
    """JSON with ``//``, ``/* */`` or single-``/`` comments and trailing commas, as plain JSON text.

    Outside strings JSON has no other use for ``/``, so it always starts a comment; strings are
    copied untouched (a URL in a value survives)."""
    return _drop_outside_strings(_TRAILING_COMMA, _drop_outside_strings(_COMMENT, text))


def render_json(template: Template, values: Mapping[str, str]) -> str:
    """Substitute, drop comments, parse, and write strict JSON (indent 2, no NaN)."""
    text = strict_json(template.substitute(values))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{template.source} does not give valid JSON after substitution: {exc}") from None
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
