"""A group's own input templates: plain replacement of KT_VAR<name>_, refused before anything runs when wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import base_config, write_config

from pdrflow.cli import main
from pdrflow.kosma.inputs import render_pdr_config_json, render_pdrnew_inp
from pdrflow.kosma.parameters import DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS, PARAMETERS
from pdrflow.kosma.templates import BUILTIN_DIR, PLACEHOLDER, load_template, strict_json

BUILTIN_PDRNEW = (BUILTIN_DIR / "PDRNEW.INP.template").read_text()
BUILTIN_JSON = (BUILTIN_DIR / "pdr_config.json.template").read_text()


def _params() -> dict[str, object]:
    params: dict[str, object] = {p.name: p.default for p in PARAMETERS if p.default is not None}
    params.update(xnsur=1.0e3, sint=10.0, zmetal=1.0, rtot=2.5e17)
    return params


def _run_with(tmp_path: Path, null_home: Path, capsys: pytest.CaptureFixture[str], **templates: str) -> str:
    run_dir = tmp_path / "run"
    config = base_config(run_dir, home=null_home)
    for key, text in templates.items():
        path = tmp_path / f"{key}.template"
        path.write_text(text)
        config["kosma_tau"][key] = str(path)
    assert main(["run", str(write_config(tmp_path / "t.yaml", config))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not run_dir.exists()  # refused before the ledger, the archive or a scratch dir exist
    return err


def test_placeholders_end_at_the_first_underscore_that_closes_a_name() -> None:
    text = "KT_VARh2_h_coll_rates_\nKT_VARpreshh2_ , KT_VARpreshco_\nKT_VARd2gratio1_,KT_VARd2gratio2_"
    assert PLACEHOLDER.findall(text) == ["h2_h_coll_rates", "preshh2", "preshco", "d2gratio1", "d2gratio2"]


def test_an_unknown_placeholder_is_exit_2_naming_it(
    tmp_path: Path, null_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    err = _run_with(tmp_path, null_home, capsys, pdrnew_template=BUILTIN_PDRNEW + "KT_VARnosuchthing_\n")
    assert "kosma_tau.pdrnew_template: unknown placeholder KT_VARnosuchthing_" in err


def test_a_varied_parameter_the_template_never_writes_is_exit_2_naming_it(
    tmp_path: Path, null_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # the test grid varies density and fuv: a template without SINT would give every fuv the same inputs
    err = _run_with(tmp_path, null_home, capsys, json_template=BUILTIN_JSON.replace("KT_VARsint_", "1.0"))
    assert "kosma_tau.json_template: the grid varies sint but" in err


def test_a_template_that_cannot_give_json_is_exit_2(
    tmp_path: Path, null_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    err = _run_with(tmp_path, null_home, capsys, json_template=BUILTIN_JSON.replace('"output_file":', '"output_file"'))
    assert "kosma_tau.json_template:" in err and "valid JSON" in err


def test_substitution_is_text_not_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "t.template"
    path.write_text(BUILTIN_PDRNEW.replace("KT_VARalpha_", "KT_VARalpha_ __import__('os')  # 3*10"))
    template = load_template("pdrnew", path)
    text = render_pdrnew_inp(_params(), DEFAULT_NETWORK_SPECIES, ELEMENT_DEFAULTS, None, template)  # type: ignore[arg-type]
    assert "1.5 __import__('os')  # 3*10" in text.splitlines()


def test_json_comments_and_trailing_commas_go_strings_stay(tmp_path: Path) -> None:
    text = '{"a": "x // not a comment, }", // a comment\n "b": [1, 2,], / single slash\n "species": KT_VARspecies_,}'
    assert json.loads(strict_json(text.replace("KT_VARspecies_", "0"))) == {
        "a": "x // not a comment, }", "b": [1, 2], "species": 0}
    path = tmp_path / "j.template"
    path.write_text(text)
    rendered = render_pdr_config_json(_params(), ["CO", "C+"], ELEMENT_DEFAULTS, load_template("json", path))  # type: ignore[arg-type]
    assert json.loads(rendered) == {"a": "x // not a comment, }", "b": [1, 2], "species": ["CO", "C+"]}
