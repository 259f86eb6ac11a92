"""Grid expansion: notations, archive names, model hashes, and the rendered KOSMA-tau inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import base_config, write_config

from pdrflow.config import load_config
from pdrflow.errors import ConfigError
from pdrflow.grid import Identity, expand_grid, name_component
from pdrflow.kosma.inputs import fortran_number, render_pdr_config_json, render_pdrnew_inp
from pdrflow.kosma.parameters import clump_radius_cm

IDENTITY = Identity("a" * 64, "b" * 64, "c" * 64, "e" * 64)


def _models(tmp_path: Path, null_home: Path, identity: Identity = IDENTITY, **grid: object) -> list:
    config = base_config(tmp_path, home=null_home)
    config["grid"].update(grid)
    return list(expand_grid(load_config(write_config(tmp_path / "g.yaml", config)), identity))


def test_both_notations_give_the_same_models_and_contract_names(tmp_path: Path, null_home: Path) -> None:
    physical = _models(tmp_path, null_home, metallicity=[1.0], density=[1e3, "1e4"], mass=[0.1], fuv=[10, 100.0])
    legacy_grid = {"metallicity_percent": ["100"], "density_tenthdex": ["30", 40], "mass_tenthdex": ["-10"],
                   "fuv_tenthdex": ["10", "20"]}
    config = base_config(tmp_path, home=null_home)
    config["grid"] = {"name": "testgrid", **legacy_grid}
    legacy = list(expand_grid(load_config(write_config(tmp_path / "l.yaml", config)), IDENTITY))
    assert [m.name for m in physical] == [
        "100_30_-10_10_00", "100_30_-10_20_00", "100_40_-10_10_00", "100_40_-10_20_00"]
    assert [m.name for m in legacy] == [m.name for m in physical]
    assert [m.model_hash for m in legacy] == [m.model_hash for m in physical]
    assert physical[0].parameters["rtot"] == pytest.approx(2.458e17, rel=1e-3)  # the contract's example


def test_leading_zero_tenthdex_is_a_number_kept_as_written_in_the_name(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["grid"] = {"name": "g", "metallicity_percent": ["100"], "density_tenthdex": ["05"],
                      "mass_tenthdex": ["00"], "fuv_tenthdex": ["10.0"]}
    (model,) = expand_grid(load_config(write_config(tmp_path / "z.yaml", config)), IDENTITY)
    assert model.name == "100_05_00_10.0_00"  # the predecessor's strings, as existing archives name them
    assert model.axes["density"] == pytest.approx(10**0.5)
    assert model.axes["fuv"] == pytest.approx(10.0)


def test_a_zero_component_is_named_00_as_existing_archives_have_it(tmp_path: Path, null_home: Path) -> None:
    (model,) = _models(tmp_path, null_home, density=[1e3], fuv=[1.0])
    assert model.name == "100_30_-10_00_00"
    assert name_component("mass", 1.0) == "00"


def test_predecessor_naming_rounds_between_tenth_dex_and_refuses_collisions(tmp_path: Path, null_home: Path) -> None:
    models = _models(tmp_path, null_home, density=[3e3], fuv=[10], naming="predecessor")
    assert [m.name for m in models] == ["100_35_-10_10_00"]  # round(34.77)
    with pytest.raises(ConfigError, match="would share the archive name"):
        _models(tmp_path, null_home, density=[3e3, 3.1e3], fuv=[10], naming="predecessor")


def test_values_between_tenth_dex_get_a_disambiguated_name(tmp_path: Path, null_home: Path) -> None:
    models = _models(tmp_path, null_home, density=[3e3, 3.01e3], fuv=[10])
    assert [m.name for m in models] == ["100_34.7712_-10_10_00", "100_34.7857_-10_10_00"]
    assert name_component("metallicity", 0.5) == "50"
    assert name_component("metallicity", 0.333) == "33.3000"


def test_values_the_name_cannot_tell_apart_are_refused(tmp_path: Path, null_home: Path) -> None:
    with pytest.raises(ConfigError, match="would share the archive name"):
        _models(tmp_path, null_home, density=[1e3, 1.0000000001e3], fuv=[10])


def test_varied_parameters_extend_the_name(tmp_path: Path, null_home: Path) -> None:
    models = _models(tmp_path, null_home, density=[1e3], fuv=[10], parameters={"cosray": [2e-16, 5e-17]})
    assert [m.name for m in models] == ["100_30_-10_10_00_cosray2.0e-16", "100_30_-10_10_00_cosray5.0e-17"]
    assert models[0].model_hash != models[1].model_hash


def test_model_hash_covers_code_rates_species_and_parameters(tmp_path: Path, null_home: Path) -> None:
    base = _models(tmp_path, null_home, density=[1e3], fuv=[10])[0].model_hash
    assert _models(tmp_path, null_home, density=[1e3], fuv=[10])[0].model_hash == base  # stable
    for identity in (Identity("d" * 64, "b" * 64, "c" * 64, "e" * 64), Identity("a" * 64, "d" * 64, "c" * 64, "e" * 64),
                     Identity("a" * 64, "b" * 64, "d" * 64, "e" * 64),
                     Identity("a" * 64, "b" * 64, "c" * 64, "d" * 64)):  # the input templates too
        assert _models(tmp_path, null_home, identity, density=[1e3], fuv=[10])[0].model_hash != base
    assert _models(tmp_path, null_home, density=[1e3], fuv=[10], parameters={"tgasc": 51})[0].model_hash != base
    assert _models(tmp_path, null_home, density=[1e3], fuv=[10], abundances={"C": 1e-4})[0].model_hash != base
    config = base_config(tmp_path, home=null_home)
    config["grid"].update(density=[1e3], fuv=[10])
    config["kosma_tau"]["onion_species"] = ["CO", "C+"]
    other = next(iter(expand_grid(load_config(write_config(tmp_path / "s.yaml", config)), IDENTITY)))
    assert other.model_hash != base


def test_fortran_number_keeps_full_precision() -> None:
    assert fortran_number(1000.0) == "1.0e+03"
    assert fortran_number(0.05) == "5.0e-02"
    assert fortran_number(1.5) == "1.5"
    assert fortran_number(7) == "7"
    value = 2.4581234567890125e17
    assert float(fortran_number(value)) == value


def test_rendered_inputs_carry_the_model(tmp_path: Path, null_home: Path) -> None:
    (model,) = _models(tmp_path, null_home, density=[1e4], fuv=[100], parameters={"cosray": 5e-17})
    text = render_pdrnew_inp(model.parameters, model.network_species, model.elements, model.name)
    lines = text.splitlines()
    # KOSMA-tau reads by position (1-based lines 7, 15, 17, 19 hold XNSUR, RTOT, SINT, COSRAY)
    assert (lines[6], lines[16], lines[18]) == ("1.0e+04", "100.0", "5.0e-17")
    assert float(lines[14]) == clump_radius_cm(1e4, 0.1, 1.5, 0.2)
    assert lines[147] == f"*MODEL GRID {model.name}"  # asked for here; blank by default
    assert "CHEMCHECK END   5" in lines and "SPECIES  13CO" in lines
    assert "CARBON       2.34e-04" in lines
    document = json.loads(render_pdr_config_json(model.parameters, model.network_species, model.elements))
    assert document["physical_params"]["surface_density"] == 1e4
    assert len(document["dust"]["dust_to_gas_ratio"]) == 10
    assert document["element_abundances"]["fe"] == 1.0e-6


def test_fast_hash_equals_the_canonical_hash_over_all_parameters(tmp_path: Path, null_home: Path) -> None:
    from pdrflow.grid import model_hash

    models = _models(tmp_path, null_home, density=[1e3, 3e4], fuv=[10], parameters={"cosray": [2e-16, 5e-17]})
    for model in models:
        assert model.model_hash == model_hash(
            model.parameters, model.onion_species, model.network_species, model.elements, IDENTITY)
    # The same physics hashes the same whether a parameter is varied or fixed in the config.
    fixed = _models(tmp_path, null_home, density=[1e3], fuv=[10], parameters={"cosray": 5e-17})[0]
    assert fixed.model_hash == models[1].model_hash


# ---- limits and values that would break the run, refused before anything is expanded ----------------


def test_a_huge_grid_is_refused_from_its_axis_lengths_before_expansion(tmp_path: Path, null_home: Path) -> None:
    import time

    values = [10.0 ** (i / 1000) for i in range(1, 10_001)]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"grid: 100000000 models \(10000 density x 10000 fuv\) is more than "
                                          r"run.max_models = 1000000; raise run.max_models if you mean it"):
        _models(tmp_path, null_home, density=values, fuv=values)
    assert time.monotonic() - started < 20  # expanding would take hours and gigabytes


def test_run_max_models_is_configurable(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home, run={"max_models": 4})
    config["grid"].update(density=[1e3, 1e4], fuv=[10, 100])
    assert len(list(expand_grid(load_config(write_config(tmp_path / "ok.yaml", config)), IDENTITY))) == 4
    config["grid"]["parameters"] = {"cosray": [1e-16, 2e-16]}
    with pytest.raises(ConfigError, match=r"grid: 8 models \(2 density x 2 fuv x 2 parameters.cosray\) is more"):
        list(expand_grid(load_config(write_config(tmp_path / "big.yaml", config)), IDENTITY))


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"density": [1e-320]},
         "grid: the clump radius for density 9.99989e-321 and mass 0.1 is not a finite positive"),
        ({"parameters": {"cosray": [1e-16, "1.0e-16"]}}, "grid.parameters.cosray: a value is listed twice"),
        ({"parameters": {"Niter": 2**31}}, "grid.parameters.Niter: 2147483648 is out of range for a KOSMA-tau integer"),
        ({"parameters": {"Niter": "9" * 40}}, "grid.parameters.Niter: expected an integer, got '9999"),
        ({"parameters": {"fuvstring": ".hidden"}}, "grid.parameters.fuvstring: expected a file-name-like string"),
        ({"parameters": {"fuvstring": "a b"}}, "grid.parameters.fuvstring: expected a file-name-like string"),
        ({"density": [10**400]}, "grid.density[0]: 10000000000000000"),
        ({"fuv": ["1e400"]}, "grid.fuv[0]: inf is not a finite number"),
        ({"abundances": {"C": float("nan")}}, "grid.abundances.C: nan is not a finite number"),
    ],
)
def test_values_that_would_break_the_run_are_refused(
    tmp_path: Path, null_home: Path, grid: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _models(tmp_path, null_home, **grid)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 300


def test_tenthdex_out_of_range_is_refused_not_an_overflow(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["grid"] = {"name": "g", "metallicity_percent": [10**400], "density_tenthdex": ["99999"],
                      "mass_tenthdex": ["-10"], "fuv_tenthdex": ["9" * 5000]}
    loaded = load_config(write_config(tmp_path / "t.yaml", config))
    with pytest.raises(ConfigError, match=r"grid.metallicity_percent\[0\]: 1000.* is out of range"):
        list(expand_grid(loaded, IDENTITY))
    config["grid"]["metallicity_percent"] = ["100"]
    loaded = load_config(write_config(tmp_path / "t.yaml", config))
    with pytest.raises(ConfigError, match=r"grid.density_tenthdex\[0\]: '99999' is out of range"):
        list(expand_grid(loaded, IDENTITY))
    config["grid"]["density_tenthdex"] = ["30"]
    loaded = load_config(write_config(tmp_path / "t.yaml", config))
    with pytest.raises(ConfigError, match=r"grid.fuv_tenthdex\[0\]: expected tenths of a dex"):
        list(expand_grid(loaded, IDENTITY))
