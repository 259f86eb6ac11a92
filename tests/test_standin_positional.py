"""The stand-in reads PDRNEW.INP by line position, type-strict, like KOSMA-tau's Fortran READs.

The authority is the golden contract (``../shared/contract/golden/cNN``): every golden PDRNEW.INP must
parse to its case's values, and a value line moved by one must break the stand-in, either in the read
itself (a line/variable named, exit 2) or in the cross-check against pdr_config.json (exit 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pdrflow.kosma.parameters import ELEMENT_DEFAULTS, PARAMETERS
from pdrflow.kosma.standin import EXIT_BAD_INPUT, EXIT_INCONSISTENT, standin_home
from pdrflow.kosma.standin.pdrinput import (
    PDRNEW_READS,
    InconsistentInputs,
    InputError,
    Inputs,
    check_consistent,
    fortran_integer,
    fortran_real,
    load_config,
    parse_config,
    parse_pdrnew,
    read_line,
    read_model,
)

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "contract" / "golden"
# The golden files are the contract, beside the project as ../shared: missing is a failure, not a skip.
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "PDRNEW.INP").is_file()) if GOLDEN.is_dir() else []


def test_the_golden_files_are_there() -> None:
    assert len(CASES) == 8, f"expected the 8 golden cases in {GOLDEN}"
ROUNDED = 2e-3  # the golden files round floats to four significant digits
VALUE_LINES = [line for line, _, _ in PDRNEW_READS]
PART_TWO_LINES = [line for line in VALUE_LINES if line > 88]


def strict_json(text: str) -> Any:
    """The golden pdr_config.json as strict JSON: drop ``//`` and ``/`` comments and trailing commas.

    One pass that knows whether it is inside a string, so a ``/`` or ``,`` in a string value survives.
    """
    out: list[str] = []
    index, in_string = 0, False
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[index + 1])
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char == "/":  # a comment, whether it starts with one slash or two, runs to the end of the line
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        elif char in "}]":
            back = len(out)
            while back and out[back - 1].isspace():
                back -= 1
            if back and out[back - 1] == ",":  # trailing comma before the closing bracket
                del out[back - 1]
            out.append(char)
        else:
            out.append(char)
        index += 1
    return json.loads("".join(out))


def golden_lines(case: str = "c01") -> list[str]:
    return (GOLDEN / case / "PDRNEW.INP").read_text().splitlines()


def golden_config(case: str = "c01") -> Inputs:
    return parse_config(strict_json((GOLDEN / case / "pdr_config.json").read_text()))


def swapped(lines: list[str], first: int, second: int) -> list[str]:
    """``lines`` with line numbers ``first`` and ``second`` (1-based) exchanged."""
    result = list(lines)
    result[first - 1], result[second - 1] = lines[second - 1], lines[first - 1]
    return result


def deleted(lines: list[str], number: int, blank_at: int = 146) -> list[str]:
    """``lines`` without line ``number``, a blank line inserted at ``blank_at`` so the cards stay in place."""
    result = [line for index, line in enumerate(lines, start=1) if index != number]
    result.insert(blank_at - 1, "")
    return result


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def refused(lines: list[str], config: Inputs, rel_tol: float = ROUNDED) -> str:
    """The reason the stand-in refuses these PDRNEW.INP lines with this config ('' if it accepts them)."""
    try:
        check_consistent(parse_pdrnew(text(lines)), config, rel_tol=rel_tol)
    except InputError as exc:
        assert "PDRNEW.INP" in str(exc)
        return f"read: {exc}"
    except InconsistentInputs as exc:
        return f"cross-check: {exc}"
    return ""


def expected_values(case: str) -> dict[str, object]:
    document = json.loads((GOLDEN / case / "case.json").read_text())
    values: dict[str, object] = {p.name: p.default for p in PARAMETERS if p.default is not None}
    physical = document["physical"]
    values.update(xnsur=physical["xnsur"], sint=physical["sint"], zmetal=physical["zmetal"],
                  rtot=physical["rtot_cm"])
    values.update(document["fixed_parameters"])
    return values


@pytest.mark.parametrize("case", CASES)
def test_every_golden_pdrnew_reads_as_its_case(case: str) -> None:
    read = parse_pdrnew((GOLDEN / case / "PDRNEW.INP").read_text())
    expected = expected_values(case)
    assert set(read.values) == set(expected)
    for name, value in read.values.items():
        if isinstance(value, str):
            assert value == expected[name], name
        else:
            assert value == pytest.approx(expected[name], rel=ROUNDED, abs=1e-300), name
            assert isinstance(value, float) or not isinstance(expected[name], float), name  # INTEGER reads stay int
    assert read.values["fuvstring"] == "Lyalpha.fuv" and read.model_grid is None and read.chemcheck == {"END": 5}
    document = json.loads((GOLDEN / case / "case.json").read_text())
    assert len(read.species) == document["network_species_count"] == 105
    assert read.species == tuple(strict_json((GOLDEN / case / "pdr_config.json").read_text())["species"])
    assert read.species[:3] == ("HE+", "HE", "H+") and read.species[-1] == "JS"
    assert len(read.elements) == 14  # the cards the golden has; Ne, Al, K, Ar, Ca only in the JSON
    for key, value in read.elements.items():
        assert value == pytest.approx(ELEMENT_DEFAULTS[key], rel=ROUNDED), key


@pytest.mark.parametrize("case", CASES)
def test_golden_pdrnew_and_golden_json_agree(case: str) -> None:
    config = golden_config(case)
    check_consistent(parse_pdrnew((GOLDEN / case / "PDRNEW.INP").read_text()), config, rel_tol=ROUNDED)
    assert len(config.elements) == 19 and config.chemcheck == {"END": 5}
    assert config.values["inds"] == 4 and config.values["indx"] == 7 and config.values["h2_h_coll_rates"] == 3


def test_fortran_list_directed_types() -> None:
    for good in ("1", "1.0", "1.", ".5e1", "1.000e+03", "1.0d3", "1.0D+03", "-2.5E-1", "+3"):
        fortran_real(good)
    assert fortran_real("1.0D+03") == fortran_real("1.0d3") == fortran_real("1000") == 1000.0
    assert fortran_integer("-1") == -1 and fortran_integer("60") == 60
    for bad_integer in ("1.000e+03", "1.5", "abc", "1.0", "", "1e3"):
        with pytest.raises(InputError):
            fortran_integer(bad_integer)
    for bad_real in ("abc", "inf", "nan", "1_000", "1.0e", "0x10", ""):
        with pytest.raises(InputError):
            fortran_real(bad_real)
    assert read_line(27, "REAL", ("preshh2", "preshco"), "0.000e+00 , 1.0d0") == [0.0, 1.0]
    assert read_line(55, "REAL", tuple("abcdefghij"), "1.0, 2*2.0 7*0.0") == [1.0, 2.0, 2.0] + [0.0] * 7
    assert read_line(34, "CHARACTER", ("fuvstring",), "  'my field.fuv'  ") == ["my field.fuv"]


def test_wrong_types_and_counts_name_the_line_and_the_variable() -> None:
    lines, config = golden_lines(), golden_config()
    for number, value, variable in ((29, "1.0", "IFUVMETH"), (136, "6.0e+01", "NITER"), (7, "abc", "XNSUR"),
                                    (44, "", "TDUSTC"), (27, "0.0", "PRESHCO"), (34, "a b", "FUVSTRING")):
        changed = list(lines)
        changed[number - 1] = value
        reason = refused(changed, config)
        assert reason.startswith("read:") and f"line {number}" in reason and variable in reason, reason
    ten = list(lines)
    ten[54] = ", ".join(ten[54].split(", ")[:9])  # 9 of the 10 dust-to-gas ratios
    reason = refused(ten, config)
    assert "line 55" in reason and "D2GRATIO10" in reason and "expected 10 value(s), found 9" in reason
    ten[54] = lines[54] + ", 0.0"
    assert "found 11" in refused(ten, config)
    with pytest.raises(InputError, match="lines"):
        parse_pdrnew(text(lines[:140]))


def test_a_part_two_description_swapped_with_its_value_fails_the_read() -> None:
    reason = refused(swapped(golden_lines(), 99, 100), golden_config())
    assert reason.startswith("read:") and "line 100" in reason and "OMEGA_NEG" in reason, reason


def test_a_deleted_part_two_line_fails_the_read_where_the_shift_ends() -> None:
    # Line 101 (OMEGA_POS) gone, a blank line later: LAMBDA's value moves up into OMEGA_POS (a REAL, silently
    # accepted), and LAMBDA's READ gets the next description.
    reason = refused(deleted(golden_lines(), 101), golden_config())
    assert reason.startswith("read:") and "line 102" in reason and "LAMBDA_NEWT" in reason, reason


def test_a_silent_shift_is_caught_by_the_cross_check() -> None:
    lines = swapped(golden_lines(), 100, 101)  # OMEGA_NEG and OMEGA_POS exchanged: both REAL reads succeed
    read = parse_pdrnew(text(lines))
    assert (read.values["omega_neg"], read.values["omega_pos"]) == (2.0, 5.0)
    reason = refused(lines, golden_config())
    assert reason.startswith("cross-check:") and "line 100 OMEGA_NEG=2.0" in reason, reason
    # Part I too: two INTEGER lines under one description (IPEHMETH=1, INDXPEH=4)
    assert refused(swapped(golden_lines(), 46, 47), golden_config()).startswith("cross-check:")


@pytest.mark.parametrize("number", VALUE_LINES)
def test_any_value_line_moved_by_one_is_refused(number: int) -> None:
    lines, config = golden_lines(), golden_config()
    assert refused(lines, config) == ""
    with_previous = swapped(lines, number - 1, number)
    if with_previous != lines:  # two equal lines exchanged are the same file
        assert refused(with_previous, config), f"swapping lines {number - 1} and {number} went unnoticed"
    if number in PART_TWO_LINES:
        assert refused(deleted(lines, number), config), f"deleting line {number} went unnoticed"


def test_the_model_grid_line_and_the_cards() -> None:
    lines, config = golden_lines(), golden_config()
    assert lines[147] == "" and lines[152].startswith("*CHEMCHECK ALL")
    grid = list(lines)
    grid[147] = "*MODEL GRID clumps_2025"
    assert parse_pdrnew(text(grid)).model_grid == "clumps_2025"
    for bad in ("MODEL GRID x", "*MODEL GRID", "0"):
        grid[147] = bad
        assert "line 148" in refused(grid, config)
    chemcheck = list(lines)
    chemcheck[152] = chemcheck[152][1:]  # CHEMCHECK ALL switched on, the JSON says chemchk_all false
    assert parse_pdrnew(text(chemcheck)).chemcheck == {"ALL": 5, "END": 5}
    assert refused(chemcheck, config).startswith("cross-check:")
    for number, line, message in ((160, "SPECIES", "line 160"), (200, "SPECIES  CO", "twice"),
                                  (269, "HELIUM 1.0 2.0", "line 269"), (270, "CARBON abc", "line 270"),
                                  (160, "NEON 1e-5", "unknown card"), (155, "CHEMCHECK END 5.0", "line 155")):
        changed = list(lines)
        changed[number - 1] = line
        assert message in refused(changed, config), (number, line)
    order = swapped(lines, 160, 161)
    assert "differ from entry 1" in refused(order, config)
    element = [line.replace("CARBON       2.340e-04", "CARBON       2.5e-04") for line in lines]
    assert "element C=" in refused(element, config)
    no_carbon = [line for line in lines if not line.startswith("CARBON")]
    assert "CARBON" in refused(no_carbon, config)


def test_pdr_config_json_is_strict_and_read_by_its_key_tree() -> None:
    golden = (GOLDEN / "c01" / "pdr_config.json").read_text()
    with pytest.raises(InputError, match="strict JSON"):
        load_config(golden)  # the predecessor's comments and trailing comma are not JSON
    document = strict_json(golden)
    assert parse_config(load_config(json.dumps(document))).values == golden_config().values
    for bad_text in ('{"a": 1,}', '{"a": NaN}', '{"a": 1, "a": 2}', "[]"):
        with pytest.raises(InputError):
            load_config(bad_text)

    def broken(path: str, value: object) -> str:
        changed = json.loads(json.dumps(document))
        *groups, key = path.split("/")
        node = changed
        for group in groups:
            node = node[group]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
        with pytest.raises(InputError) as caught:
            parse_config(changed)
        return str(caught.value)

    assert "missing physical_params/cloud_radius" in broken("physical_params/cloud_radius", KeyError)
    assert "unknown chemical_database_file" in broken("chemical_database_file", "pdrinpdata/chem_rates.dat")
    assert "an integer" in broken("radiative_transfer/fuv_method", 1.0)
    assert "an integer" in broken("numerical_params/max_iterations", True)
    assert "a finite number" in broken("physical_params/surface_density", "1e3")
    assert "10 numbers" in broken("dust/dust_to_gas_ratio", [0.0] * 9)
    assert "species" in broken("species", [])
    assert "chemchk" in broken("numerical_params/chemchk_end", 1)


def scratch_from_golden(root: Path, lines: list[str], config: Any) -> Path:
    """A scratch dir as the orchestrator lays it out, with the (possibly edited) golden inputs."""
    (root / "pdrinpdata").mkdir(parents=True)
    for sub in ("pdroutput", "onionoutput", "Out"):
        (root / sub).mkdir()
    (root / "pdrinpdata" / "chem_rates.dat").symlink_to(standin_home() / "pdrinpdata" / "chem_rates_standin.dat")
    (root / "PDRNEW.INP").write_text(text(lines))
    (root / "pdr_config.json").write_text(json.dumps(config, indent=2))
    return root


def run_pdr(cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PDRFLOW_STANDIN_")}
    return subprocess.run([sys.executable, "-m", "pdrflow.kosma.standin.pdr"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=clean, check=False)


def test_the_pdr_program_runs_the_golden_inputs_and_refuses_shifted_ones(tmp_path: Path) -> None:
    config = strict_json((GOLDEN / "c01" / "pdr_config.json").read_text())
    good = run_pdr(scratch_from_golden(tmp_path / "golden", golden_lines(), config))
    assert good.returncode == 0, good.stdout + good.stderr
    assert (tmp_path / "golden" / "pdroutput" / "CTRL_IND").is_file()
    type_failure = run_pdr(scratch_from_golden(tmp_path / "read", swapped(golden_lines(), 99, 100), config))
    assert type_failure.returncode == EXIT_BAD_INPUT, type_failure.stderr
    assert "line 100" in type_failure.stderr and "OMEGA_NEG" in type_failure.stderr
    silent = run_pdr(scratch_from_golden(tmp_path / "cross", swapped(golden_lines(), 100, 101), config))
    assert silent.returncode == EXIT_INCONSISTENT, silent.stderr
    assert "OMEGA_NEG" in silent.stderr and "newton_omega_neg" in silent.stderr
    for refused_dir in ("read", "cross"):
        assert list((tmp_path / refused_dir / "pdroutput").iterdir()) == []


def test_values_out_of_range_are_refused(tmp_path: Path) -> None:
    config = strict_json((GOLDEN / "c01" / "pdr_config.json").read_text())
    config["physical_params"]["cloud_radius"] = -1.0
    lines = golden_lines()
    lines[14] = "-1.0"  # RTOT, line 15: both files agree, and the value is nonsense
    scratch = scratch_from_golden(tmp_path / "range", lines, config)
    with pytest.raises(InputError, match="rtot > 0"):
        read_model(scratch)
    model, rates = read_model(scratch_from_golden(tmp_path / "fine", golden_lines(),
                                                  strict_json((GOLDEN / "c01" / "pdr_config.json").read_text())))
    assert rates.name == "chem_rates.dat" and model.element("Ne") == 6.9e-5 and len(model.network_species) == 105
    assert [key for key, _ in model.elements][:3] == ["He", "C", "13C"]
