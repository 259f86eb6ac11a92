"""Hostile or mistaken inputs through the real ``pdrflow run`` command (a child process).

Every case must give exit 2, exactly one line on stderr that names the problem, no traceback,
nothing on stdout, and nothing written: no ledger, no archive, no scratch directory (they all
live below ``run_dir``, which must not come into existence; ``TMPDIR`` points there too, so the
default scratch root is covered). A few cases also check that refusing was quick.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config, write_config

SECRET = "canary-UrlPw-9d1e"  # a password written into a URL: refused, and never echoed

Built = dict[str, Any] | bytes | Path  # a config to write, raw config bytes, or a path to pass as is


@dataclass(frozen=True)
class Case:
    label: str
    build: Callable[[dict[str, Any], Path], Built | None]  # mutate the config in place, or return one
    fragment: str  # must appear in the one stderr line
    max_seconds: float | None = None  # refused quickly (huge grids, YAML bombs)


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def build(config: dict[str, Any], _case: Path) -> None:
        config[section][key] = value

    return build


def _slurm(**values: Any) -> Callable[[dict[str, Any], Path], None]:
    def build(config: dict[str, Any], _case: Path) -> None:
        config["cluster"] = {"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "00:10:00", **values}

    return build


def _grid(**values: Any) -> Callable[[dict[str, Any], Path], None]:
    def build(config: dict[str, Any], _case: Path) -> None:
        config["grid"].update(values)

    return build


def _legacy(key: str, values: list[Any]) -> Callable[[dict[str, Any], Path], None]:
    def build(config: dict[str, Any], _case: Path) -> None:
        config["grid"].pop(key.split("_")[0])
        config["grid"][key] = values

    return build


def _raw(text: bytes) -> Callable[[dict[str, Any], Path], bytes]:
    return lambda _config, _case: text


def _file(name: str, text: str = "x\n") -> Callable[[Path], Path]:
    def make(case: Path) -> Path:
        (case / name).write_text(text)
        return case / name

    return make


def _dir(case: Path, name: str) -> Path:
    (case / name).mkdir()
    return case / name


def _storage_sftp(**values: Any) -> Callable[[dict[str, Any], Path], None]:
    def build(config: dict[str, Any], _case: Path) -> None:
        config["storage"] = {"kind": "sftp", "host": "127.0.0.1", "root": "/srv/archive", **values}

    return build


def _yaml_bomb(section: str) -> bytes:
    """Billion laughs: 9^9 references if expanded. safe_load shares the aliases; nothing may expand them."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return ("x-anchors:\n" + "\n".join("  " + line for line in lines) + f"\n{section}\n").encode()


def _bomb_in_kind(config: dict[str, Any], _case: Path) -> bytes:
    # The anchors are defined inside a real section's value, so the unknown-key check is not what stops it.
    lines = ['  - &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  - &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = yaml.safe_dump({k: v for k, v in config.items() if k != "storage"}, sort_keys=False)
    return (text + "storage:\n  kind:\n" + "\n".join(lines) + "\n").encode()


CASES: list[Case] = [
    # ---- the file itself -------------------------------------------------------------------
    Case("malformed YAML", _raw(b"grid: [unclosed\n"), "invalid YAML at line 2"),
    Case("tab indentation", _raw(b"grid:\n\tname: x\n"), "invalid YAML at line 2: found character '\\t'"),
    Case("top level is a list", _raw(b"- grid\n- run\n"), "the top level must be a mapping of sections, got list"),
    Case("top level is a scalar", _raw(b"42\n"), "the top level must be a mapping of sections, got int"),
    Case("empty file", _raw(b""), "the top level must be a mapping of sections, got an empty file"),
    Case("non-UTF-8 bytes", _raw("grid: {name: caf\xe9}\n".encode("latin-1")), "not UTF-8 text (byte 16)"),
    Case("UTF-16 file", _raw("grid: {name: x}\n".encode("utf-16")), "not UTF-8 text"),
    Case("python/object tag", _raw(b"grid: !!python/object/apply:os.system ['touch PWNED']\n"),
         "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    Case("python/name tag", _raw(b"grid: !!python/name:os.system\n"), "python/name:os.system"),
    Case("duplicate key", _raw(b"grid: {name: a}\ngrid: {name: b}\n"), "the key 'grid' is given twice"),
    Case("5000-digit integer", _raw(b"grid: {name: " + b"9" * 5000 + b"}\n"), "Exceeds the limit (4300 digits)"),
    Case("nesting 5000 deep", _raw(b"grid: " + b"[" * 5000 + b"]" * 5000 + b"\n"), "nested too deeply",
         max_seconds=30),
    Case("billion laughs in an unknown section", lambda c, d: _yaml_bomb("grid: {}"), "x-anchors: unknown section",
         max_seconds=30),
    Case("billion laughs as storage.kind", _bomb_in_kind, "storage.kind: unknown kind [['lol', ", max_seconds=30),
    # ---- sections and keys -----------------------------------------------------------------
    Case("unknown section, did you mean", lambda c, d: {**c, "clusterr": {}},
         "clusterr: unknown section (did you mean 'cluster'?)"),
    Case("unknown nested key, did you mean", _set("cluster", "n_worker", 2),
         "cluster.n_worker: unknown key (did you mean 'n_workers'?)"),
    Case("unknown sftp key, did you mean", _storage_sftp(hostname="x"),
         "storage.hostname: unknown key (did you mean 'host'?)"),
    Case("section is a list", lambda c, d: {**c, "run": [1, 2]}, "run: must be a mapping of keys, got list"),
    Case("unknown storage kind", _set("storage", "kind", "s3"),
         "storage.kind: unknown kind 's3' (choose one of local, sftp)"),
    Case("unknown cluster kind", _set("cluster", "kind", "kubernetes"),
         "cluster.kind: unknown kind 'kubernetes' (choose one of allocation, local, slurm)"),
    Case("sftp without host", lambda c, d: c.update(storage={"kind": "sftp", "root": "/srv"}),
         "storage.host: required key is missing"),
    Case("sftp empty host", _storage_sftp(host=""), "storage.host: must be a host name"),
    Case("sftp host that is an ssh option", _storage_sftp(host="-oProxyCommand=touch PWNED"),
         "storage.host: must be a host name, address or ssh_config alias (no spaces, not starting with -)"),
    Case("sftp relative root", _storage_sftp(root="archive"),
         "storage.root: must be an absolute directory on the server"),
    Case("sftp port 0", _storage_sftp(port=0), "storage.port: Input should be greater than or equal to 1"),
    Case("sftp files_in_flight 1000", _storage_sftp(files_in_flight=1000),
         "storage.files_in_flight: Input should be less"),
    # ---- wrong types -----------------------------------------------------------------------
    Case("n_workers is a word", _set("cluster", "n_workers", "two"),
         "cluster.n_workers: Input should be a valid integer"),
    Case("n_workers is 2.5", _set("cluster", "n_workers", 2.5), "cluster.n_workers: Input should be a valid integer"),
    Case("axis is a scalar", _grid(fuv=10), "grid.fuv: Input should be a valid list (got 10)"),
    Case("axis value is a list", _grid(fuv=[[10]]), "grid.fuv[0]: expected a number or a numeric string, got [10]"),
    Case("axis value is a bool", _grid(fuv=[True]), "grid.fuv[0]: expected a number or a numeric string, got True"),
    Case("axis value is an expression", _grid(density=["3*10"]), "grid.density[0]: expected a number, got '3*10'"),
    Case("grid name is a number", _grid(name=123), "grid.name: Input should be a valid string (got 123)"),
    Case("keep_failed is 'maybe'", _set("scratch", "keep_failed", "maybe"),
         "scratch.keep_failed: Input should be a valid boolean"),
    Case("parameters is a list", _grid(parameters=[1]), "grid.parameters: Input should be a valid dictionary"),
    Case("integer parameter 1.5", _grid(parameters={"ifuvmeth": 1.5}),
         "grid.parameters.ifuvmeth: expected an integer, got 1.5"),
    Case("integer parameter 10^12", _grid(parameters={"ifuvmeth": 10**12}),
         "grid.parameters.ifuvmeth: 1000000000000 is out of range for a KOSMA-tau integer"),
    # ---- numbers on every axis, timeouts and counts ----------------------------------------------
    Case("negative density", _grid(density=[1e3, -1e4]), "grid.density[1]: must be > 0, got -10000.0"),
    Case("zero metallicity", _grid(metallicity=[0]), "grid.metallicity[0]: must be > 0, got 0"),
    Case("negative mass", _grid(mass=[-0.1]), "grid.mass[0]: must be > 0, got -0.1"),
    Case("zero fuv", _grid(fuv=[0.0]), "grid.fuv[0]: must be > 0, got 0.0"),
    Case("NaN density", _grid(density=[float("nan")]), "grid.density[0]: nan is not a finite number"),
    Case("inf fuv", _grid(fuv=[float("inf")]), "grid.fuv[0]: inf is not a finite number"),
    Case("'1e400' mass", _grid(mass=["1e400"]), "grid.mass[0]: inf is not a finite number"),
    Case("1e400 float metallicity", lambda c, d: yaml.safe_dump(c).replace("- 1.0\n", "- 1.0e+400\n", 1).encode(),
         "grid.metallicity[0]: inf is not a finite number"),
    Case("10^400 integer density", _grid(density=[10**400]), "grid.density[0]: 1000000000000000"),
    Case("density so small the radius overflows", _grid(density=[1e-320]),
         "grid: the clump radius for density 9.99989e-321 and mass 0.1 is not a finite positive number"),
    Case("tenth-dex out of range", _legacy("density_tenthdex", ["99999"]),
         "grid.density_tenthdex[0]: '99999' is out of range"),
    Case("tenth-dex written as 1e3", _legacy("density_tenthdex", ["1e3"]),
         "grid.density_tenthdex[0]: expected tenths of a dex"),
    Case("metallicity percent 10^400", _legacy("metallicity_percent", [10**400]), "is out of range"),
    Case("empty axis", _grid(fuv=[]), "grid.fuv: needs at least one value"),
    Case("duplicate axis values", _grid(fuv=[10, "1e1"]), "grid.fuv: a value is listed twice"),
    Case("duplicate parameter values", _grid(parameters={"cosray": [1e-16, "1e-16"]}),
         "grid.parameters.cosray: a value is listed twice"),
    Case("NaN parameter", _grid(parameters={"cosray": ".nan"}),
         "grid.parameters.cosray: expected a number, got '.nan'"),
    Case("inf abundance", _grid(abundances={"C": "1e400"}), "grid.abundances.C: inf is not a finite number"),
    Case("negative pdr_timeout", _set("kosma_tau", "pdr_timeout", -1),
         "kosma_tau.pdr_timeout: Input should be greater than 0"),
    Case("NaN onion_timeout", _set("kosma_tau", "onion_timeout", float("nan")),
         "kosma_tau.onion_timeout: Input should be"),
    Case("inf pdr_timeout", _set("kosma_tau", "pdr_timeout", float("inf")),
         "kosma_tau.pdr_timeout: Input should be a finite number"),
    Case("'1e400' onion_timeout", _set("kosma_tau", "onion_timeout", "1e400"),
         "kosma_tau.onion_timeout: Input should be a finite"),
    Case("zero n_workers", _set("cluster", "n_workers", 0),
         "cluster.n_workers: Input should be greater than or equal to 1"),
    Case("10^9 n_workers", _set("cluster", "n_workers", 10**9), "cluster.n_workers: 1000000000 worker threads on a"),
    Case("slurm min_jobs above max_jobs", _slurm(min_jobs=5, max_jobs=2),
         "cluster.min_jobs: must not be larger than cluster.max_jobs"),
    Case("archive_workers without a staging directory", _slurm(archive_workers=1),
         "cluster.archive_workers: needs scratch.staging"),
    Case("zero max_in_flight", _set("run", "max_in_flight", 0),
         "run.max_in_flight: Input should be greater than or equal to 1"),
    Case("zero archive_attempts", _set("run", "archive_attempts", 0), "run.archive_attempts: Input should be greater"),
    Case("inf backoff", _set("run", "archive_backoff_max", float("inf")),
         "run.archive_backoff_max: Input should be a finite number"),
    Case("NaN expected_model_seconds", _set("run", "expected_model_seconds", float("nan")),
         "run.expected_model_seconds: Input should be a finite number"),
    Case("10^8-model grid", _grid(density=[10.0 ** (i / 1000) for i in range(1, 10001)],
                                  fuv=[10.0 ** (i / 1000) for i in range(1, 10001)]),
         "grid: 100000000 models (10000 density x 10000 fuv) is more than run.max_models = 1000000", max_seconds=40),
    Case("grid over a lowered run.max_models", _set("run", "max_models", 3),
         "grid: 4 models (2 density x 2 fuv) is more than run.max_models = 3"),
    # ---- grid names -------------------------------------------------------------------------
    Case("grid name ../escape", _grid(name="../escape"), "grid.name: must be letters, digits and . _ + -"),
    Case("grid name /", _grid(name="/"),
         "grid.name: must be letters, digits and . _ + - starting with a letter or digit"),
    Case("grid name ..", _grid(name=".."), "grid.name: must be letters, digits"),
    Case("grid name empty", _grid(name=""), "grid.name: must be letters, digits"),
    Case("grid name whitespace", _grid(name="   "), "grid.name: must be letters, digits"),
    Case("grid name with NUL", _grid(name="a\x00b"), "grid.name: control characters are not allowed (got 'a\\x00b')"),
    Case("grid name 5000 characters", _grid(name="a" * 5000), "grid.name: String should have at most 100 characters"),
    # ---- species and strings that reach file names or input files ---------------------------------
    Case("species '; rm -rf'", _set("kosma_tau", "onion_species", ["CO; rm -rf /"]),
         "kosma_tau.onion_species[0]: a species name is letters, digits, + and - (like CO, C+, 13CO) "
         "(got 'CO; rm -rf /')"),
    Case("species ../x", _set("kosma_tau", "onion_species", ["CO", "../x"]),
         "kosma_tau.onion_species[1]: a species name"),
    Case("species $(x)", _set("kosma_tau", "onion_species", ["$(x)"]), "(got '$(x)')"),
    Case("species with a space", _set("kosma_tau", "onion_species", ["C O"]), "(got 'C O')"),
    Case("species twice", _set("kosma_tau", "onion_species", ["CO", "CO"]),
         "kosma_tau.onion_species: species listed twice: CO"),
    Case("network species with a newline", _set("kosma_tau", "network_species", ["CO\nSPECIES X"]),
         "kosma_tau.network_species[0]: control characters are not allowed"),
    Case("empty network species", _set("kosma_tau", "network_species", []),
         "kosma_tau.network_species: needs at least one species"),
    Case("fuvstring with a path", _grid(parameters={"fuvstring": "../x.fuv"}),
         "grid.parameters.fuvstring: expected a file-name-like string, got '../x.fuv'"),
    Case("helper executable outside home", _set("kosma_tau", "helper_executables", ["../../bin/sh"]),
         "kosma_tau.helper_executables: '../../bin/sh' must be a plain file name"),
    Case("helper named pdrexe", _set("kosma_tau", "helper_executables", ["pdrexe"]),
         "kosma_tau.helper_executables: 'pdrexe' must be a plain file name"),
    Case("chem_rates outside pdrinpdata", _set("kosma_tau", "chem_rates", "../pdrexe"),
         "kosma_tau.chem_rates: give a file name inside"),
    # ---- the installation ---------------------------------------------------------------------
    Case("kosma home missing", lambda c, d: _set("kosma_tau", "home", str(d / "no-kosma"))(c, d),
         "kosma_tau.home: {case}/no-kosma is not a directory"),
    Case("kosma home is a file", lambda c, d: _set("kosma_tau", "home", str(_file("home-file")(d)))(c, d),
         "kosma_tau.home: {case}/home-file is not a directory"),
    Case("kosma home empty string", _set("kosma_tau", "home", ""), "kosma_tau.home: an empty path"),
    Case("kosma home 300-character component", _set("kosma_tau", "home", "/" + "k" * 300 + "/x"),
         "kosma_tau.home: cannot use '/kkkk"),
    Case("executable missing", _set("kosma_tau", "onion_executable", "no-such-onionexe"),
         "kosma_tau.onion_executable: {home}/no-such-onionexe does not exist"),
    Case("executable is a directory", _set("kosma_tau", "pdr_executable", "In"),
         "kosma_tau.pdr_executable: {home}/In is not a regular file"),
    Case("executable not executable", lambda c, d: _set("kosma_tau", "pdr_executable", str(_file("pdr.sh")(d)))(c, d),
         "kosma_tau.pdr_executable: {case}/pdr.sh is not executable"),
    Case("both home and standin", _set("kosma_tau", "standin", True), "kosma_tau.home: give either home or standin"),
    # ---- paths: archive, scratch, ledger -------------------------------------------------------
    Case("archive root inside scratch", lambda c, d: _set("storage", "root", c["scratch"]["root"] + "/archive")(c, d),
         "storage.root: the archive and the scratch root must not contain each other"),
    Case("scratch inside archive root", lambda c, d: _set("scratch", "root", c["storage"]["root"] + "/scratch")(c, d),
         "storage.root: the archive and the scratch root must not contain each other"),
    Case("archive root is a file", lambda c, d: _set("storage", "root", str(_file("archive-file")(d)))(c, d),
         "storage.root: {case}/archive-file exists and is not a directory"),
    Case("scratch root is a file", lambda c, d: _set("scratch", "root", str(_file("scratch-file")(d)))(c, d),
         "scratch.root: {case}/scratch-file exists and is not a directory"),
    Case("scratch root empty", _set("scratch", "root", " "), "scratch.root: an empty path"),
    # Every key typed as a local path, found from the models (config/checks.py), not only those once listed
    Case("staging directory empty", _set("scratch", "staging", ""), "scratch.staging: an empty path"),
    Case("log file empty", _set("run", "log_file", " "), "run.log_file: an empty path"),
    Case("template empty", _set("kosma_tau", "json_template", ""), "kosma_tau.json_template: an empty path"),
    Case("archive root with NUL", _set("storage", "root", "/tmp/a\x00b"),
         "storage.root: control characters are not allowed"),
    Case("SQLite ledger is a directory", lambda c, d: _set("database", "url", f"sqlite:///{_dir(d, 'ledger-dir')}")(c,
                                                                                                                    d),
         "database.url: the SQLite ledger {case}/ledger-dir is a directory"),
    Case("SQLite ledger below a file", lambda c, d: _set("database", "url", f"sqlite:///{_file('f')(d)}/l.sqlite")(c,
                                                                                                                   d),
         "database.url: {case}/f is not a directory, so {case}/f/l.sqlite cannot be created"),
    # ---- the database URL and passwords --------------------------------------------------------------
    Case("password in a PostgreSQL URL", _set("database", "url", f"postgresql+psycopg://pdr:{SECRET}@127.0.0.1:9/pdr"),
         "database.url: must not contain a password; set PDRFLOW_DB_PASSWORD instead"),
    Case("password in a MySQL URL", _set("database", "url", f"mysql+pymysql://pdr:{SECRET}@127.0.0.1:9/pdr"),
         "database.url: must not contain a password; set PDRFLOW_DB_PASSWORD instead"),
    Case("password in a malformed URL", _set("database", "url", f"postgresql://pdr:{SECRET}@127.0.0.1:port/pdr"),
         "database.url: not a valid database URL"),
    Case("password key in database", _set("database", "password", SECRET),
         "database.password: passwords are never read from the config file; set PDRFLOW_DB_PASSWORD"),
    Case("password key in sftp storage", _storage_sftp(password=SECRET),
         "storage.password: passwords are never read from the config file; set PDRFLOW_SFTP_PASSWORD"),
    Case("password key in the cluster", _set("cluster", "password", SECRET),  # no cluster kind has one to set
         "cluster.password: passwords are never read from the config file"),
    Case("unsupported database", _set("database", "url", "oracle://pdr@127.0.0.1/pdr"),
         "database.url: unsupported database 'oracle'"),
    Case("database URL that is no URL", _set("database", "url", "ledger.sqlite"),
         "database.url: not a valid database URL"),
]


def _fill(fragment: str, case: Path, home: Path) -> str:
    return fragment.replace("{case}", str(case)).replace("{home}", str(home))


def _pdrflow(*args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str],
                                                                                     float]:
    started = time.monotonic()
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "pdrflow", *args], capture_output=True, text=True, timeout=240,
        env={**os.environ, **env, "COLUMNS": "200"}, stdin=subprocess.DEVNULL, check=False,
    )
    return done, time.monotonic() - started


def _assert_refused(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pdrflow: error: ")
    assert fragment in lines[0], lines[0]
    assert len(lines[0]) < 600  # a hostile value is shortened, never echoed whole


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_hostile_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, null_home: Path, case: Case) -> None:
    assert len(CASES) >= 30
    run_dir = tmp_path / "run"  # ledger, archive, scratch and TMPDIR all live here
    config = base_config(run_dir, home=null_home)
    built = case.build(config, tmp_path)
    path = tmp_path / "bad.yaml"
    if isinstance(built, bytes):
        path.write_bytes(built)
    else:
        write_config(path, built if isinstance(built, dict) else config)
    before = sorted(p.name for p in tmp_path.iterdir())
    done, seconds = _pdrflow("run", str(path), env={"TMPDIR": str(run_dir / "tmp")})
    _assert_refused(done, _fill(case.fragment, tmp_path, null_home))
    assert SECRET not in done.stdout + done.stderr
    assert not run_dir.exists()  # no ledger, no archive, no scratch
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing else next to the config either
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    if case.max_seconds is not None:
        assert seconds < case.max_seconds, f"took {seconds:.1f} s to refuse"


# ---- the config path itself ---------------------------------------------------------------------


def test_config_file_missing(tmp_path: Path) -> None:
    done, _ = _pdrflow("run", str(tmp_path / "nope.yaml"), env={})
    _assert_refused(done, f"{tmp_path}/nope.yaml: config file not found")


def test_config_file_is_a_directory(tmp_path: Path) -> None:
    done, _ = _pdrflow("run", str(tmp_path), env={})
    _assert_refused(done, f"{tmp_path}: is a directory, not a config file")
    assert list(tmp_path.iterdir()) == []


def test_config_file_below_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done, _ = _pdrflow("run", str(tmp_path / "file" / "c.yaml"), env={})
    _assert_refused(done, "cannot read (Not a directory)")


def test_config_file_unreadable(tmp_path: Path, null_home: Path) -> None:
    """As root, mode 000 stops nobody; drop the capabilities that bypass file modes (setpriv)."""
    path = write_config(tmp_path / "secret.yaml", base_config(tmp_path / "run", home=null_home))
    path.chmod(0)
    drop = ("setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
            "--")
    done, _ = _pdrflow("run", str(path), env={}, prefix=drop if os.geteuid() == 0 else ())
    _assert_refused(done, f"{path}: cannot read (Permission denied)")
    assert not (tmp_path / "run").exists()


def test_config_file_that_never_ends_is_refused_quickly(tmp_path: Path) -> None:
    done, seconds = _pdrflow("run", "/dev/zero", env={})
    _assert_refused(done, "/dev/zero: larger than 10 MB, not a config file")
    assert seconds < 30


def test_config_path_with_nul_is_refused(tmp_path: Path) -> None:
    # argv cannot hold a NUL; the Python API can be handed one.
    from pdrflow.config import load_config
    from pdrflow.errors import ConfigError

    with pytest.raises(ConfigError, match="a path with a NUL character"):
        load_config(f"{tmp_path}/a\x00b.yaml")


# ---- an existing ledger is not touched by a refused run ---------------------------------------------


def test_refused_run_adds_no_rows_to_an_existing_ledger(tmp_path: Path, null_home: Path) -> None:
    good = write_config(tmp_path / "good.yaml", base_config(tmp_path, home=null_home))
    done, _ = _pdrflow("db", "upgrade", str(good), env={})
    assert done.returncode == 0, done.stderr
    ledger = tmp_path / "ledger.sqlite"

    def snapshot() -> tuple[str, dict[str, int]]:
        with sqlite3.connect(ledger) as db:
            tables = [row[0] for row in db.execute("select name from sqlite_master where type='table'")]
            counts = {table: db.execute(f'select count(*) from "{table}"').fetchone()[0] for table in tables}
        return hashlib.sha256(ledger.read_bytes()).hexdigest(), counts

    before = snapshot()
    for bad_grid in ({"density": [-1.0]}, {"name": "../x"}, {"fuv": [10.0 ** (i / 1000) for i in range(1, 20001)],
                                                            "density": [10.0 ** (i / 1000) for i in range(1, 20001)]}):
        config = base_config(tmp_path, home=null_home)
        config["grid"].update(bad_grid)
        done, _ = _pdrflow("run", str(write_config(tmp_path / "bad.yaml", config)), env={})
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert snapshot() == before
    assert not (tmp_path / "archive").exists() and not (tmp_path / "scratch").exists()
