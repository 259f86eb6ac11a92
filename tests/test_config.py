"""Bad input: exit 2, one clear line naming the key and the problem, nothing written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from helpers import base_config, cli, write_config

from pdrflow.cli import main
from pdrflow.config import load_config
from pdrflow.errors import ConfigError


def _mutate(config: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    config[section][key] = value
    return config


BAD_CONFIGS = [
    ("unknown key", lambda c: _mutate(c, "storage", "roto", "x"), "storage.roto: unknown key (did you mean 'root'?)"),
    ("unknown section", lambda c: {**c, "gird": {}}, "gird: unknown section (did you mean 'grid'?)"),
    ("negative density", lambda c: _mutate(c, "grid", "density", [1e3, -1e4]), "grid.density[1]: must be > 0"),
    ("zero fuv", lambda c: _mutate(c, "grid", "fuv", [0]), "grid.fuv[0]: must be > 0"),
    ("non-numeric", lambda c: _mutate(c, "grid", "density", ["1e3", "lots"]), "grid.density[1]: expected a number"),
    ("expression is not evaluated", lambda c: _mutate(c, "grid", "density", ["3*10"]), "expected a number"),
    ("nan", lambda c: _mutate(c, "grid", "mass", [float("nan")]), "grid.mass[0]: nan is not a finite number"),
    ("physical value in tenth-dex key",
     lambda c: {**c, "grid": {**{k: v for k, v in c["grid"].items() if k != "density"}, "density_tenthdex": ["1e3"]}},
     "grid.density_tenthdex[0]: expected tenths of a dex"),
    ("both notations", lambda c: _mutate(c, "grid", "density_tenthdex", ["30"]),
     "grid.density: give either density or density_tenthdex, not both"),
    ("missing axis", lambda c: {**c, "grid": {k: v for k, v in c["grid"].items() if k != "mass"}},
     "grid.mass: required"),
    ("unknown parameter", lambda c: _mutate(c, "grid", "parameters", {"cosrey": 1e-16}),
     "grid.parameters.cosrey: unknown KOSMA-tau parameter (did you mean 'cosray'?)"),
    ("axis parameter", lambda c: _mutate(c, "grid", "parameters", {"xnsur": 1e3}), "grid.parameters.xnsur: set by"),
    ("grid name with a path", lambda c: _mutate(c, "grid", "name", "../escape"), "grid.name: must be letters, digits"),
    ("missing executable", lambda c: _mutate(c, "kosma_tau", "pdr_executable", "no-such-pdrexe"),
     "kosma_tau.pdr_executable:"),
    ("executable is a directory", lambda c: _mutate(c, "kosma_tau", "pdr_executable", "In"),
     "is not a regular file"),
    ("missing rate file", lambda c: _mutate(c, "kosma_tau", "chem_rates", "nope.dat"), "kosma_tau.chem_rates:"),
    ("species without onion input", lambda c: _mutate(c, "kosma_tau", "onion_species", ["CO", "HCN"]),
     "kosma_tau.onion_species: no onion input"),
    ("species with a path", lambda c: _mutate(c, "kosma_tau", "onion_species", ["../CO"]), "kosma_tau.onion_species"),
    ("wrong type", lambda c: _mutate(c, "cluster", "n_workers", "two"), "cluster.n_workers:"),
    ("unknown storage kind", lambda c: _mutate(c, "storage", "kind", "s3"), "storage.kind: unknown kind 's3'"),
    ("password in the url", lambda c: _mutate(c, "database", "url", "postgresql://u:hunter2@localhost/db"),
     "database.url: must not contain a password"),
    ("password key", lambda c: _mutate(c, "database", "password", "hunter2"), "set PDRFLOW_DB_PASSWORD"),
    ("archive inside scratch", lambda c: _mutate(c, "storage", "root", c["scratch"]["root"] + "/archive"),
     "storage.root: the archive and the scratch root must not contain each other"),
]


@pytest.mark.parametrize(("label", "mutate", "message"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, null_home: Path, label: str, mutate: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "bad.yaml", mutate(base_config(run_dir, home=null_home)))
    assert main(["run", str(config)]) == 2  # the CLI's entry point, in this process (fast)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "hunter2" not in out + err
    assert not run_dir.exists()  # no ledger, no archive, no scratch


def test_bad_config_through_the_real_command(tmp_path: Path, null_home: Path) -> None:
    run_dir = tmp_path / "run"
    config = base_config(run_dir, home=null_home)
    config["grid"]["density"] = [-1e3]
    done = cli("run", str(write_config(tmp_path / "bad.yaml", config)))
    assert done.returncode == 2
    assert done.stderr == "pdrflow: error: grid.density[0]: must be > 0, got -1000.0\n"
    assert done.stdout == ""
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grid: [unclosed\n", "invalid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("grid: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = cli("run", str(path))
    assert done.returncode == 2
    assert message in done.stderr


def test_missing_and_non_utf8_config_files(tmp_path: Path) -> None:
    done = cli("status", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "config file not found" in done.stderr
    path = tmp_path / "latin1.yaml"
    path.write_bytes("grid: {name: caf\xe9}\n".encode("latin-1"))
    done = cli("run", str(path))
    assert done.returncode == 2 and "not UTF-8" in done.stderr


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["storage"]["root"] = "archive-rel"
    config["database"]["url"] = "sqlite:///ledger-rel.sqlite"
    path = write_config(tmp_path / "run.yaml", config)
    loaded = load_config(path)
    assert loaded.storage.root == tmp_path / "archive-rel"  # type: ignore[union-attr]
    assert loaded.database.sqlalchemy_url().database == str(tmp_path / "ledger-rel.sqlite")


def test_password_comes_from_the_environment_and_is_masked(
    tmp_path: Path, null_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = base_config(tmp_path, home=null_home)
    config["database"]["url"] = "postgresql+psycopg://pdr@127.0.0.1:5432/pdr"
    monkeypatch.setenv("PDR_DB_PASSWORD", "canary-s3cret")  # the predecessor's name is accepted too
    loaded = load_config(write_config(tmp_path / "run.yaml", config))
    assert loaded.database.sqlalchemy_url().password == "canary-s3cret"
    assert "canary-s3cret" not in repr(loaded) and "canary-s3cret" not in str(loaded.database)


def test_defaults_come_from_the_shipped_yaml(tmp_path: Path, null_home: Path) -> None:
    loaded = load_config(write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home)))
    assert loaded.kosma_tau.pdr_executable == "pdrexe"
    assert loaded.run.archive_attempts == 6
    assert loaded.cluster.threads_per_worker == 1


def test_unknown_key_in_python_api_raises_config_error(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["run"]["max_in_flite"] = 3
    with pytest.raises(ConfigError, match=r"run.max_in_flite: unknown key \(did you mean 'max_in_flight'\?\)"):
        load_config(write_config(tmp_path / "run.yaml", config))


# ---- hostile-input details that are cheaper to check in process (the CLI cases: test_hostile_inputs) ----


def test_a_key_given_twice_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("grid:\n  name: a\n  density: [1e3]\n  density: [1e4]\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 4: the key 'density' is given twice"):
        load_config(path)


def test_yaml_merge_keys_still_work(tmp_path: Path, null_home: Path) -> None:
    """A merge key (<<) may be overridden by an explicit key: that is YAML, not a duplicate."""
    text = write_config(tmp_path / "c.yaml", base_config(tmp_path, home=null_home)).read_text()
    merged = text.replace("grid:\n  name: testgrid\n", "grid:\n  <<: {name: other, mass: [0.5]}\n  name: testgrid\n", 1)
    assert merged != text
    path = tmp_path / "merge.yaml"
    path.write_text(merged)
    loaded = load_config(path)
    assert loaded.grid.name == "testgrid" and loaded.grid.mass == [0.1]


def test_alias_bomb_is_walked_once_per_object(tmp_path: Path) -> None:
    """9^9 leaves as a tree, 10 objects as a graph: the control-character check must see the graph."""
    import time

    lines = ['  - &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  - &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("kosma_tau:\n  helper_executables:\n" + "\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"kosma_tau.helper_executables\[0\]: Input should be a valid string"):
        load_config(path)
    assert time.monotonic() - started < 5


def test_messages_shorten_hostile_values(tmp_path: Path, null_home: Path) -> None:
    from pdrflow.errors import shown

    assert shown("x" * 10_000).startswith("'xxx") and len(shown("x" * 10_000)) < 80
    config = base_config(tmp_path, home=null_home)
    config["cluster"]["kind"] = "k" * 100_000
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.yaml", config))
    assert len(str(caught.value)) < 200 and str(caught.value).startswith("cluster.kind: unknown kind 'kkk")


def test_many_validation_errors_stay_on_one_short_line(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["kosma_tau"]["onion_species"] = [f"bad species {i}" for i in range(10_000)]
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.yaml", config))
    message = str(caught.value)
    assert "\n" not in message and message.endswith("; and 9997 more") and len(message) < 600


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("storage", {"kind": "sftp", "host": "archive server", "root": "/a"}, "storage.host: must be a host name"),
        ("storage", {"kind": "sftp", "host": "h", "root": "/a", "username": "-l root"},
         "storage.username: must be a user"),
        ("storage", {"kind": "sftp", "host": "h", "root": "~/a"}, "storage.root: must be an absolute directory"),
        ("database", {"url": "postgresql+psycopg2://pdr@127.0.0.1/pdr"},
         "the driver for 'postgresql+psycopg2' is not installed"),
        ("database", {"url": "mysql+nosuchdriver://pdr@127.0.0.1/pdr"}, "the driver for 'mysql+nosuchdriver'"),
        ("storage", {"key_filename": ""}, "storage.key_filename: an empty path"),
        ("cluster", {"threads_per_worker": 1000}, "cluster.n_workers: 2000 worker threads"),
    ],
)
def test_more_refusals(tmp_path: Path, null_home: Path, section: str, values: dict[str, Any], message: str) -> None:
    config = base_config(tmp_path, home=null_home)
    if values.get("kind") == "sftp" or "key_filename" in values:
        config["storage"] = {"kind": "sftp", "host": "h", "root": "/a"}
    config[section].update(values)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_reasonable_values_are_still_accepted(tmp_path: Path, null_home: Path) -> None:
    config = base_config(tmp_path, home=null_home)
    config["storage"] = {"kind": "sftp", "host": "archive-server.example.org", "username": "kosma.user",
                         "root": "/data/kosma-archive", "port": 2222}
    config["cluster"] = {"kind": "slurm", "job_script_prologue": ["module load hdf5\t# tab-separated comment"]}
    config["run"]["max_models"] = 10_000_000
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    assert loaded.storage.host == "archive-server.example.org"  # type: ignore[union-attr]
    assert loaded.run.max_models == 10_000_000
    assert load_config(write_config(tmp_path / "d.yaml", base_config(tmp_path,
                                                                     home=null_home))).run.max_models == 1_000_000
