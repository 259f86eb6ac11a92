"""Where a model's files are in its scratch directory and where they go in the archive.

Archive layout (the contract users' downstream tools rely on), for grid G and model J:
``G/pdrgrid/{TEXTOUT,pdr,pdrstruct,pdrchem,chemchk,MCDRT,PDRNEW,pdr_config,CTRL_IND}<J>...`` and
``G/oniongrid/ONION<J>.<onion file>`` plus ``G/oniongrid/TEXTOUT<J>_<species>``.
"""

from __future__ import annotations

from collections.abc import Iterable

PDR_OUTPUT_DIR = "pdroutput"
ONION_OUTPUT_DIR = "onionoutput"
MCDRT_DIR = "Out"
MCDRT_TARBALL = "MCDRT.tar.gz"  # made in scratch from Out/ after the run
PDR_ARCHIVE_DIR = "pdrgrid"
ONION_ARCHIVE_DIR = "oniongrid"

# (file in scratch, archive name given the model name J)
_PDR_FILES: tuple[tuple[str, str], ...] = (
    ("pdroutput/TEXTOUT", "TEXTOUT{J}"),
    ("pdroutput/pdrout.hdf", "pdr{J}.hdf"),
    ("pdroutput/pdrstruct_s.hdf5", "pdrstruct{J}.hdf5"),
    ("pdroutput/pdrchem_c.hdf5", "pdrchem{J}.hdf5"),
    ("pdroutput/chemchk.out", "chemchk{J}.out"),
    ("PDRNEW.INP", "PDRNEW{J}.INP"),
    ("pdr_config.json", "pdr_config{J}.json"),
    ("pdroutput/CTRL_IND", "CTRL_IND{J}"),
)
ONION_FILE_PATTERNS: tuple[str, ...] = (
    "jerg_{S}.smli", "jerg_{S}.srli", "jtemp_{S}.smli", "jtemp_{S}.smlc", "linebt_{S}.out", "ONION3_{S}.OUT",
)


def onion_textout(species: str) -> str:
    """Per-species copy of onion's TEXTOUT (each onion run rewrites onionoutput/TEXTOUT)."""
    return f"{ONION_OUTPUT_DIR}/TEXTOUT_{species}"


def pdr_archive_path(grid: str, model: str, source: str) -> str:
    """The archive path of one of PDR's files, named by its place in scratch (e.g. ``pdroutput/pdrstruct_s.hdf5``)."""
    target = dict(_PDR_FILES)[source]
    return f"{grid}/{PDR_ARCHIVE_DIR}/{target.format(J=model)}"


def onion_archive_path(grid: str, model: str, name: str) -> str:
    """The archive path of onion's file ``name`` (e.g. ``linebt_CO.out``) of model J."""
    return f"{onion_archive_prefix(grid, model)}{name}"


def onion_archive_prefix(grid: str, model: str) -> str:
    return f"{grid}/{ONION_ARCHIVE_DIR}/ONION{model}."


def staged_files(grid: str, model: str, species: Iterable[str], with_mcdrt: bool) -> list[tuple[str, str]]:
    """(scratch-relative source, archive-relative destination) for every file of one model."""
    pdrgrid = f"{grid}/{PDR_ARCHIVE_DIR}"
    files = [(source, pdr_archive_path(grid, model, source)) for source, _ in _PDR_FILES]
    if with_mcdrt:
        files.append((MCDRT_TARBALL, f"{pdrgrid}/MCDRT{model}.tar.gz"))
    for s in species:
        for pattern in ONION_FILE_PATTERNS:
            name = pattern.format(S=s)
            files.append((f"{ONION_OUTPUT_DIR}/{name}", onion_archive_path(grid, model, name)))
        files.append((onion_textout(s), f"{grid}/{ONION_ARCHIVE_DIR}/TEXTOUT{model}_{s}"))
    return files
