"""A model's steps may write into their inputs; the KOSMA-tau home every model shares stays byte for byte the same."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import base_config, cli, status, write_config

pytestmark = pytest.mark.timeout(120)

# A PDR code that scribbles over every input it can reach, then writes only the required outputs.
HOSTILE_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "hostile pdrexe"; echo "Revision: hostile-1"; exit 0; fi
touched=0
for f in $(find -L pdrinpdata onioninpdata In -type f); do
  echo "appended by pdrexe" >> "$f"; touched=$((touched + 1))
done
for d in $(find -L pdrinpdata onioninpdata In -type d); do echo "new" > "$d/created_by_pdrexe"; done
: > pdrinpdata/other.dat
echo "overwritten" > pdrinpdata/chem_rates.dat
: > onioninpdata/ONION3.INP.CO
echo "overwritten" > In/sub/b.dat
rm -f In/a.dat
echo "touched $touched input files"
echo "structure" > pdroutput/pdrstruct_s.hdf5
echo "NPOINTS 1" > pdroutput/CTRL_IND
"""


def hostile_home(root: Path) -> Path:
    home = root / "hostile-home"
    for sub in ("pdrinpdata/sub", "onioninpdata/deep", "In/sub", "shared"):
        (home / sub).mkdir(parents=True)
    (home / "pdrexe").write_text(HOSTILE_PDR)
    (home / "onionexe").write_text("#!/bin/sh\necho 'Revision: hostile-1'\n")
    for exe in ("pdrexe", "onionexe"):
        (home / exe).chmod(0o755)
    files = {
        "pdrinpdata/chem_rates_test.dat": "rates\n", "pdrinpdata/other.dat": "other\n",
        "pdrinpdata/sub/nested.dat": "nested\n", "onioninpdata/ONION3.INP.CO": "CO\n",
        "onioninpdata/deep/x.dat": "x\n", "In/a.dat": "a\n", "In/sub/b.dat": "b\n", "shared/data.dat": "shared\n",
    }
    for name, text in files.items():
        (home / name).write_text(text)
    (home / "pdrinpdata" / "linked.dat").symlink_to("../shared/data.dat")  # a file link inside the inputs
    (home / "In" / "shared").symlink_to("../shared")  # and a directory link
    return home


def tree_digest(root: Path) -> dict[str, tuple[str, ...]]:
    """Every entry below ``root`` (links not followed): its type, mode and bytes or link target."""
    entries: dict[str, tuple[str, ...]] = {}
    for directory, subdirs, files in os.walk(root):
        for name in sorted(subdirs + files):
            path = Path(directory) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[relative] = ("dir", oct(info.st_mode))
            else:
                entries[relative] = ("file", oct(info.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def test_a_pdr_code_writing_its_inputs_leaves_the_home_unchanged(tmp_path: Path) -> None:
    home = hostile_home(tmp_path)
    before = tree_digest(home)
    document = base_config(tmp_path, home=home, kosma_tau={"onion_species": []})
    document["grid"].update(density=[1.0e3], fuv=[10.0])
    config = write_config(tmp_path / "run.yaml", document)

    done = cli("run", str(config))

    assert done.returncode == 0, done.stdout + done.stderr
    assert status(config)["counts"] == {"archived": 1}
    textout = (tmp_path / "archive" / "testgrid" / "pdrgrid" / "TEXTOUT100_30_-10_10_00").read_text()
    assert "touched 10 input files" in textout  # every input file was reached (the linked ones too)
    assert tree_digest(home) == before
