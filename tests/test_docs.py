"""The docs cannot drift from the code: the config reference is regenerated and compared."""

from __future__ import annotations

import re
from pathlib import Path

from pdrflow.cli import build_parser
from pdrflow.config import Config
from pdrflow.reference import NOT_YAML_KEYS, SECTIONS, render

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"


def test_config_reference_is_generated_from_the_models() -> None:
    page = (DOCS / "config-reference.md").read_text()
    assert page == render(), "docs/config-reference.md is stale: python -m pdrflow.reference > docs/config-reference.md"


def test_config_reference_covers_every_key() -> None:
    page = render()
    for _, _, model in SECTIONS:
        for key in model.model_fields:
            if key not in NOT_YAML_KEYS:
                assert f"| `{key}` |" in page, key
    assert {section for section in Config.model_fields if section != "path"} <= {
        path.split(".")[0] for _, path, _ in SECTIONS}


def test_every_key_says_what_it_means() -> None:
    """Each field's Field(description=...) is its meaning on the reference page: one place, in the model."""
    missing = [f"{path}.{key}" for _, path, model in SECTIONS for key, info in model.model_fields.items()
               if key not in NOT_YAML_KEYS and not (info.description or "").strip()]
    assert missing == []


def test_every_command_the_docs_show_exists() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    text = README.read_text() + (DOCS / "user-guide.md").read_text()
    shown = set(re.findall(r"pdrflow (\w+) (?:my-grid|examples/|CFG|quickstart)", text))
    assert shown and shown <= commands, shown - commands
