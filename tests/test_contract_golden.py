"""pdrflow's inputs against what the predecessor renders for the real KOSMA-tau (../shared/contract/golden).

Those files are the authority: KOSMA-tau reads ``PDRNEW.INP`` by position, so every value line
must sit where the golden has it and hold the same value (the golden rounds to four digits; pdrflow
writes full precision), with the same type (an INTEGER read of ``1.0`` fails in Fortran); the
cards after Part II must be the same and in the same order. ``pdr_config.json`` must have the
golden's key tree and values. Description and comment lines are free text.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, write_config

from pdrflow.config import load_config
from pdrflow.grid import expand_grid
from pdrflow.kosma.inputs import load_input_templates, render_inputs
from pdrflow.kosma.installation import resolve_installation
from pdrflow.kosma.templates import InputTemplates, strict_json

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "contract" / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir()) if GOLDEN.is_dir() else []
REL = 2e-3  # the golden's four significant digits
GRID_LINE = 148  # 1-based: the *MODEL GRID line; positional values before it, cards after
FREE_TEXT_KEYS = {"config_comment"}  # a description, not a value
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


def test_the_golden_cases_are_there() -> None:
    assert len(CASES) == 8, f"expected 8 golden cases in {GOLDEN}"


def _case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = json.loads((GOLDEN / name / "case.json").read_text())
    return case


def _render(tmp_path: Path, case: dict[str, Any], templates: InputTemplates | None = None) -> tuple[str, str, str]:
    """(model name, PDRNEW.INP, pdr_config.json) as pdrflow renders the golden case's model."""
    config = base_config(tmp_path, home=None, grid="golden")
    config["grid"] = {
        "name": "golden", "metallicity_percent": [case["metal_percent"]], "density_tenthdex": [case["dens_tenthdex"]],
        "mass_tenthdex": [case["mass_tenthdex"]], "fuv_tenthdex": [case["chi_tenthdex"]],
        "parameters": case["fixed_parameters"],
    }
    config["kosma_tau"]["onion_species"] = case["onion_species"]
    loaded = load_config(write_config(tmp_path / "golden.yaml", config))
    installation = resolve_installation(loaded.kosma_tau)
    (spec,) = expand_grid(loaded, installation.identity)
    pdrnew, pdr_config = render_inputs(spec.name, spec.parameters, spec.network_species, spec.elements,
                                       templates or installation.templates)
    return spec.name, pdrnew, pdr_config


def _tokens(line: str) -> list[str]:
    return [token for token in re.split(r"[,\s]+", line.strip()) if token]


def _is_value_line(line: str) -> bool:
    tokens = _tokens(line)
    return bool(tokens) and all(_NUMBER.match(token) for token in tokens)


def _same_number(ours: str, golden: str) -> bool:
    if ("." in golden or "e" in golden.lower() or "d" in golden.lower()) != (
        "." in ours or "e" in ours.lower() or "d" in ours.lower()
    ):
        return False  # an integer where the golden has a real, or the other way round
    a, b = float(ours.replace("d", "e").replace("D", "e")), float(golden.replace("d", "e").replace("D", "e"))
    return a == b or abs(a - b) <= REL * abs(b)


def pdrnew_differences(ours: str, golden: str, fuvstring: str = "Lyalpha.fuv") -> list[str]:
    """Every place where ``ours`` would make KOSMA-tau read something else than ``golden``."""
    mine, theirs = ours.splitlines(), golden.splitlines()
    problems = [] if len(mine) == len(theirs) else [f"{len(mine)} lines, the golden has {len(theirs)}"]
    for number, (a, b) in enumerate(zip(mine, theirs, strict=False), start=1):
        if number < GRID_LINE:
            if _is_value_line(b) or b.strip() == fuvstring:
                if b.strip() == fuvstring:
                    same = a.strip() == fuvstring
                else:
                    ta, tb = _tokens(a), _tokens(b)
                    same = _is_value_line(a) and len(ta) == len(tb) and all(map(_same_number, ta, tb))
                if not same:
                    problems.append(f"line {number}: {a!r}, the golden has the value line {b!r}")
            elif _is_value_line(a) or (a == "") != (b == ""):
                problems.append(f"line {number}: {a!r} where the golden has the description {b!r}")
        elif number == GRID_LINE:
            if a.strip() != b.strip():
                problems.append(f"line {number} (grid mode): {a!r}, the golden has {b!r}")
        elif b.startswith("*") or not b.strip():
            if not (a.startswith("*") or not a.strip()):
                problems.append(f"line {number}: the card {a!r} where the golden has a comment")
        else:
            ta, tb = a.split(), b.split()
            same = len(ta) == len(tb) and ta[:1] == tb[:1] and all(
                x == y or (_NUMBER.match(y) and _NUMBER.match(x) and _same_number(x, y))
                for x, y in zip(ta, tb, strict=True)
            )
            if not same:
                problems.append(f"line {number}: card {a!r}, the golden has {b!r}")
    return problems


def _leaves(document: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(document, dict):
        leaves: dict[str, Any] = {}
        for key, value in document.items():
            leaves.update(_leaves(value, f"{prefix}{key}/"))
        return leaves
    return {prefix.rstrip("/"): document}


def json_differences(ours: dict[str, Any], golden: dict[str, Any]) -> list[str]:
    mine, theirs = _leaves(ours), _leaves(golden)
    problems = [f"key {key} missing" for key in sorted(set(theirs) - set(mine))]
    problems += [f"key {key} not in the golden" for key in sorted(set(mine) - set(theirs))]
    for key in sorted(set(mine) & set(theirs) - FREE_TEXT_KEYS):
        a, b = mine[key], theirs[key]
        same_length_lists = isinstance(b, list) and isinstance(a, list) and len(a) == len(b)
        values = zip(a, b, strict=True) if same_length_lists else [(a, b)]
        for x, y in values:
            if type(x) is not type(y):
                problems.append(f"{key}: {x!r} ({type(x).__name__}), the golden has {y!r} ({type(y).__name__})")
            elif isinstance(y, float):
                if not (x == y or abs(x - y) <= REL * abs(y)):
                    problems.append(f"{key}: {x!r}, the golden has {y!r}")
            elif x != y:
                problems.append(f"{key}: {x!r}, the golden has {y!r}")
    return problems


@pytest.mark.parametrize("case_name", CASES)
def test_inputs_equal_the_golden(tmp_path: Path, case_name: str) -> None:
    case = _case(case_name)
    name, pdrnew, pdr_config = _render(tmp_path, case)
    assert name == case["model_name"]
    golden_pdrnew = (GOLDEN / case_name / "PDRNEW.INP").read_text()
    assert pdrnew_differences(pdrnew, golden_pdrnew) == []
    assert sum(line.startswith("SPECIES ") for line in pdrnew.splitlines()) == case["network_species_count"]
    assert pdrnew.splitlines()[GRID_LINE - 1] == ""  # grid mode only when asked for
    golden_json = json.loads(strict_json((GOLDEN / case_name / "pdr_config.json").read_text()))
    ours = json.loads(pdr_config)  # strict JSON: json.loads takes no comments
    assert json_differences(ours, golden_json) == []
    assert "//" not in pdr_config


def test_the_check_breaks_when_one_line_of_part_two_moves(tmp_path: Path) -> None:
    """The comparison above can fail: move OMEGA_POS one line down (it then reads LAMBDA's value)."""
    _, pdrnew, _ = _render(tmp_path, _case("c01"))
    golden = (GOLDEN / "c01" / "PDRNEW.INP").read_text()
    lines = pdrnew.splitlines()
    lines[100], lines[101] = lines[101], lines[100]  # 1-based lines 101 (OMEGA_POS) and 102 (LAMBDA)
    problems = pdrnew_differences("\n".join(lines) + "\n", golden)
    assert [p.split(":")[0] for p in problems] == ["line 101", "line 102"]
    # a description moved into the value block shifts every later line
    lines = pdrnew.splitlines()
    lines.insert(99, lines.pop(98))
    assert len(pdrnew_differences("\n".join(lines) + "\n", golden)) >= 2
    # and a JSON value in another variable's key
    document = json.loads(strict_json((GOLDEN / "c01" / "pdr_config.json").read_text()))
    swapped = json.loads(json.dumps(document))
    swapped["numerical_params"]["newton_omega_pos"] = document["numerical_params"]["newton_lambda"]
    assert json_differences(swapped, document) != []


def test_model_grid_line_only_when_asked(tmp_path: Path) -> None:
    case = _case("c01")
    config = base_config(tmp_path, home=None)
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    installation = resolve_installation(loaded.kosma_tau)
    templates = load_input_templates(None, None, model_grid=True)
    _, pdrnew, _ = _render(tmp_path, case, templates)
    assert pdrnew.splitlines()[GRID_LINE - 1] == f"*MODEL GRID {case['model_name']}"
    assert templates.sha256 != installation.templates.sha256  # so a grid-mode model has another hash


@pytest.fixture(scope="module")
def predecessor_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("devgrid")
    with tarfile.open(SHARED / "predecessor" / "devgrid.tar.gz") as archive:
        archive.extractall(target, filter="data")
    return target / "devgrid" / "kosma-tau" / "templates"


@pytest.mark.parametrize("case_name", CASES)
def test_the_predecessors_own_templates_give_the_golden_too(
    tmp_path: Path, case_name: str, predecessor_templates: Path,
) -> None:
    """A group's templates in the predecessor's syntax keep working: the same files as the golden."""
    templates = load_input_templates(predecessor_templates / "PDRNEW.INP.template",
                                     predecessor_templates / "pdr_config.json.template", model_grid=False)
    case = _case(case_name)
    _, pdrnew, pdr_config = _render(tmp_path, case, templates)
    assert pdrnew_differences(pdrnew, (GOLDEN / case_name / "PDRNEW.INP").read_text()) == []
    golden_json = json.loads(strict_json((GOLDEN / case_name / "pdr_config.json").read_text()))
    assert json_differences(json.loads(pdr_config), golden_json) == []
    assert json.loads(pdr_config)["config_comment"] == golden_json["config_comment"]  # their text kept
