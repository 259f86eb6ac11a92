"""Read archived model outputs back: profiles, abundances and line tables, from the archive alone.

The ledger says which jobs exist, their axes and state, and which files were archived with which
sha256; the files themselves are fetched from the archive (local directory or SFTP) through the
storage backend, never from a scratch directory, and checked against the ledger's sha256.

What is read, per model J of grid G (the contract's layout, pdrflow/kosma/layout.py):

- ``G/pdrgrid/pdrstruct<J>.hdf5``: ``/depth_cm``, ``/av``, ``/tgas`` (required), ``/tdust``, ``/nh``
  and ``/abundances/<species>`` (relative to H nuclei).
- ``G/oniongrid/ONION<J>.linebt_<S>.out``: one row per transition after ``#`` header lines whose
  last one names the columns ``transition wavelength_um intensity_erg_s_cm2_sr peak_tb_K``.
- ``G/pdrgrid/pdrchem<J>.hdf5`` when archived (an optional output): ``/species`` and
  ``/column_density`` (surface to centre, cm^-2).

Those names are the defaults of the config's ``results`` section (``structure``, ``linebt``,
``chemistry``), which maps them to what another code writes. A required dataset or column the file
lacks is an error that lists what the file does hold; missing optional ones, species or tables are
notes on the :class:`ModelOutputs`. :func:`model_scalars` gives every scalar of a model (surface
temperatures, transition depths, column densities, each line's intensity, peak T_B and K km/s).

Usage (a notebook)::

    with open_archive(load_config("grid.yaml")) as archive:
        for job in archive.jobs():
            if job.archived:
                out = archive.model_outputs(job)
                print(job.name, out.surface_tgas, out.line_intensity("C+", 157.74))
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from .config import Config, ResultsConfig
from .export.lines import erg_to_k_kms, identify
from .kosma.layout import PDR_OUTPUT_DIR, onion_archive_path, pdr_archive_path
from .ledger import Ledger
from .ledger.queries import JobRecord, grid_jobs
from .storage import Storage, StorageError, open_storage

LINEBT_COLUMNS = ("transition", "wavelength_um", "intensity_erg_s_cm2_sr", "peak_tb_K")  # the stand-in's
_REQUIRED_PROFILES = ("depth_cm", "av", "tgas")
_OPTIONAL_PROFILES = ("tdust", "nh")
_SHOWN_DATASETS = 40  # an error lists at most this many of a file's datasets
CARBON_CARRIERS = ("C+", "C", "CO")  # the gas-phase carbon budget for the C+/C/CO transitions


class ResultsError(Exception):
    """The archive or ledger cannot be read (no ledger, unknown grid or job, unreadable file)."""


class ModelNotArchived(ResultsError):
    """The job has no archived outputs (pending, running, failed, ...)."""


@dataclass(frozen=True)
class ArchivedFileRecord:
    path: str  # archive-relative
    size: int
    sha256: str


@dataclass(frozen=True)
class LineTable:
    """One species' line table from onion (``linebt_<S>.out``)."""

    species: str
    transitions: tuple[str, ...]
    wavelength_um: np.ndarray
    intensity: np.ndarray  # integrated intensity, clump average [erg s^-1 cm^-2 sr^-1]
    peak_tb: np.ndarray  # line-centre brightness temperature, clump average [K]

    def find(self, wavelength_um: float, rtol: float = 0.005) -> int | None:
        """Index of the transition at ``wavelength_um`` (names differ between codes; wavelengths do not)."""
        if not len(self.wavelength_um):
            return None
        index = int(np.argmin(np.abs(self.wavelength_um - wavelength_um)))
        return index if abs(self.wavelength_um[index] - wavelength_um) <= rtol * wavelength_um else None


@dataclass(frozen=True)
class ModelOutputs:
    """One archived model: depth profiles (surface first), abundances and line tables."""

    job: JobRecord
    depth_cm: np.ndarray
    av: np.ndarray  # visual extinction from the surface [mag]
    tgas: np.ndarray  # [K]
    tdust: np.ndarray  # [K]; NaN where the file has none
    nh: np.ndarray  # total H nuclei density [cm^-3]; NaN where the file has none
    abundances: Mapping[str, np.ndarray]  # relative to H nuclei
    lines: Mapping[str, LineTable]  # by species
    notes: tuple[str, ...] = ()  # what was missing or odd
    column_densities: Mapping[str, float] = field(default_factory=dict)  # [cm^-2], from pdrchem when archived

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def surface_tgas(self) -> float:
        return float(self.tgas[0])

    def line_intensity(self, species: str, wavelength_um: float) -> float | None:
        """Integrated intensity [erg s^-1 cm^-2 sr^-1] of a transition, None if not in the archive."""
        table = self.lines.get(species)
        index = None if table is None else table.find(wavelength_um)
        return None if table is None or index is None else float(table.intensity[index])


# ---- transitions --------------------------------------------------------------------------


def crossing_av(av: np.ndarray, fraction: np.ndarray, rising: bool) -> float | None:
    """A_V where ``fraction`` first crosses 0.5 going inwards (linear between depth points).

    0.0 if the fraction is already past 0.5 at the surface; None if it never gets there
    (the transition lies deeper than the clump centre)."""
    past = fraction >= 0.5 if rising else fraction <= 0.5
    hits = np.flatnonzero(past)
    if not len(hits):
        return None
    i = int(hits[0])
    if i == 0:
        return float(av[0])
    f0, f1 = float(fraction[i - 1]), float(fraction[i])
    weight = (0.5 - f0) / (f1 - f0) if f1 != f0 else 0.0
    return float(av[i - 1] + weight * (av[i] - av[i - 1]))


def h_h2_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where half of the H nuclei are in H2: 2 x(H2) / (x(H) + 2 x(H2)) = 0.5."""
    h, h2 = outputs.abundances["H"], outputs.abundances["H2"]
    total = h + 2.0 * h2
    return crossing_av(outputs.av, np.divide(2.0 * h2, total, out=np.zeros_like(total), where=total > 0), True)


def _carbon_fraction(outputs: ModelOutputs, species: str) -> np.ndarray:
    total = sum(outputs.abundances[s] for s in CARBON_CARRIERS)
    assert isinstance(total, np.ndarray)
    return np.divide(outputs.abundances[species], total, out=np.zeros_like(total), where=total > 0)


def cplus_c_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where C+ falls to half of the gas-phase carbon (C+ + C + CO)."""
    return crossing_av(outputs.av, _carbon_fraction(outputs, "C+"), False)


def c_co_transition_av(outputs: ModelOutputs) -> float | None:
    """A_V where CO rises to half of the gas-phase carbon (C+ + C + CO)."""
    return crossing_av(outputs.av, _carbon_fraction(outputs, "CO"), True)


# ---- every scalar of a model ------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarInfo:
    units: str
    long_name: str
    species: str | None = None  # lines: the onion species
    wavelength_um: float | None = None  # lines
    line: str | None = None  # lines: the pdrtpy id


def _transition_av(outputs: ModelOutputs, getter: Any, needs: tuple[str, ...]) -> float:
    if any(s not in outputs.abundances for s in needs):
        return float("nan")
    value = getter(outputs)
    return float("nan") if value is None else float(value)


def model_scalars(outputs: ModelOutputs) -> dict[str, tuple[float, ScalarInfo]]:
    """Every scalar the archived outputs give, by a stable key: NaN where a quantity is not reached
    (a transition beyond the clump centre) or its species is not in the file."""
    result: dict[str, tuple[float, ScalarInfo]] = {
        "surface_tgas": (outputs.surface_tgas, ScalarInfo("K", "gas temperature at the clump surface")),
        "surface_tdust": (float(outputs.tdust[0]), ScalarInfo("K", "dust temperature at the clump surface")),
        "centre_av": (float(outputs.av[-1]), ScalarInfo("mag", "visual extinction from the surface to the centre")),
        "av_h_h2": (_transition_av(outputs, h_h2_transition_av, ("H", "H2")),
                    ScalarInfo("mag", "A_V of the H/H2 transition, 2x(H2)/(x(H)+2x(H2)) = 0.5")),
        "av_cplus_c": (_transition_av(outputs, cplus_c_transition_av, CARBON_CARRIERS),
                       ScalarInfo("mag", "A_V of the C+/C transition, x(C+) = half the gas-phase carbon")),
        "av_c_co": (_transition_av(outputs, c_co_transition_av, CARBON_CARRIERS),
                    ScalarInfo("mag", "A_V of the C/CO transition, x(CO) = half the gas-phase carbon")),
    }
    for species, column in sorted(outputs.column_densities.items()):
        result[f"N_{species}"] = (column, ScalarInfo("cm-2", f"column density of {species}, surface to centre",
                                                      species))
    for species, table in sorted(outputs.lines.items()):
        for i, transition in enumerate(table.transitions):
            wavelength = float(table.wavelength_um[i])
            line = identify(species, transition, wavelength)
            if f"I_{line.id}" in result:
                continue  # two transitions at one wavelength: the first one counts
            intensity, tb = float(table.intensity[i]), float(table.peak_tb[i])
            about = f"{line.title} ({species} {transition})"
            result[f"I_{line.id}"] = (intensity, ScalarInfo("erg s-1 cm-2 sr-1", f"{about} integrated intensity, "
                                                            "clump average", species, wavelength, line.id))
            result[f"W_{line.id}"] = (erg_to_k_kms(intensity, wavelength),
                                      ScalarInfo("K km s-1", f"{about} integrated intensity in K km/s "
                                                 "(Rayleigh-Jeans)", species, wavelength, line.id))
            result[f"Tpeak_{line.id}"] = (tb, ScalarInfo("K", f"{about} line-centre brightness temperature, "
                                                         "clump average", species, wavelength, line.id))
    return result


# ---- file formats ---------------------------------------------------------------------------


def parse_linebt(text: str, species: str, columns: Iterable[str] = LINEBT_COLUMNS) -> LineTable:
    """A ``linebt_<S>.out`` table; ``columns``: the names of (transition, wavelength, intensity, peak T_B)
    in its last ``#`` header line. Raises ValueError naming the columns the table has when one is missing."""
    wanted = tuple(columns)
    header: list[str] = []
    rows: list[list[str]] = []
    for raw in text.splitlines():
        if raw.startswith("#"):
            header = raw.lstrip("#").split()
        elif raw.strip():
            rows.append(raw.split())
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ValueError(f"linebt table for {species} has no column {', '.join(missing)} (its columns: "
                         f"{' '.join(header) or 'no # header line'}; map them in the config's results.linebt)")
    index = [header.index(name) for name in wanted]
    try:
        numbers = np.array([[float(row[i]) for i in index[1:]] for row in rows], dtype=float).reshape(-1, 3)
    except (ValueError, IndexError):
        raise ValueError(f"linebt table for {species}: a row is not '{' '.join(header)}'") from None
    return LineTable(species, tuple(row[index[0]] for row in rows), numbers[:, 0], numbers[:, 1], numbers[:, 2])


def file_contents(f: h5py.File) -> str:
    """What an HDF5 file holds, for a message: its datasets with their shapes."""
    found: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            found.append(f"/{name} {item.shape}")

    f.visititems(visit)
    more = f" and {len(found) - _SHOWN_DATASETS} more" if len(found) > _SHOWN_DATASETS else ""
    return ", ".join(found[:_SHOWN_DATASETS]) + more if found else "no datasets"


def _dataset_name(mapping: ResultsConfig | None, name: str) -> str:
    return getattr(mapping.structure, name) if mapping is not None else name


def read_structure(path: Path, mapping: ResultsConfig | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(profiles, abundances, notes) from a ``pdrstruct`` HDF5 file, sorted surface first; dataset names
    from ``mapping.structure`` (the stand-in's without one)."""
    notes: list[str] = []
    with h5py.File(path, "r") as f:
        names = {name: _dataset_name(mapping, name) for name in (*_REQUIRED_PROFILES, *_OPTIONAL_PROFILES)}
        missing = [f"/{names[n]} ({n})" for n in _REQUIRED_PROFILES if not isinstance(f.get(names[n]), h5py.Dataset)]
        if missing:
            raise ValueError(f"{path.name} lacks {', '.join(missing)}; the file holds {file_contents(f)} "
                             "(map its datasets in the config's results.structure)")
        profiles = {name: np.asarray(f[names[name]][()], dtype=float) for name in _REQUIRED_PROFILES}
        order = np.argsort(profiles["depth_cm"], kind="stable")  # surface first, whatever the writer did
        for name in _OPTIONAL_PROFILES:
            if isinstance(f.get(names[name]), h5py.Dataset):
                profiles[name] = np.asarray(f[names[name]][()], dtype=float)
            else:
                notes.append(f"no /{names[name]} ({name}) in the structure file")
                profiles[name] = np.full(len(order), np.nan)
        group_name = _dataset_name(mapping, "abundances")
        group = f.get(group_name)
        abundances = {}
        if isinstance(group, h5py.Group):
            abundances = {name: np.asarray(item[()], dtype=float)[order] for name, item in group.items()
                          if isinstance(item, h5py.Dataset)}
        else:
            notes.append(f"no /{group_name} group (abundances) in the structure file; it holds {file_contents(f)}")
    return {name: values[order] for name, values in profiles.items()}, abundances, notes


def read_chemistry(path: Path, mapping: ResultsConfig | None = None) -> tuple[dict[str, float], list[str]]:
    """(column density by species [cm^-2], notes) from a ``pdrchem`` HDF5 file."""
    species_name = mapping.chemistry.species if mapping is not None else "species"
    columns_name = mapping.chemistry.column_density if mapping is not None else "column_density"
    with h5py.File(path, "r") as f:
        species, columns = f.get(species_name), f.get(columns_name)
        if not isinstance(species, h5py.Dataset) or not isinstance(columns, h5py.Dataset):
            note = (f"{path.name} has no /{species_name} and /{columns_name} (column densities); it holds "
                    f"{file_contents(f)} (map them in the config's results.chemistry)")
            return {}, [note]
        names = [n.decode("ascii", "replace") if isinstance(n, bytes) else str(n) for n in species[()]]
        values = np.asarray(columns[()], dtype=float).reshape(-1)
    if len(names) != len(values):
        return {}, [f"{path.name}: {len(names)} species but {len(values)} column densities"]
    return {name.strip(): float(value) for name, value in zip(names, values, strict=True)}, []


# ---- the ledger side -----------------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def structure_path(grid: str, model: str) -> str:
    return pdr_archive_path(grid, model, f"{PDR_OUTPUT_DIR}/pdrstruct_s.hdf5")


def chemistry_path(grid: str, model: str) -> str:
    return pdr_archive_path(grid, model, f"{PDR_OUTPUT_DIR}/pdrchem_c.hdf5")


def linebt_path(grid: str, model: str, species: str) -> str:
    return onion_archive_path(grid, model, f"linebt_{species}.out")


class ArchiveReader:
    """Reads one grid's archived outputs; fetched copies live in a private temporary directory."""

    def __init__(self, config: Config, ledger: Ledger, storage: Storage, workdir: Path) -> None:
        self.config = config
        self.grid = config.grid.name
        self.ledger = ledger
        self.storage = storage
        self._workdir = workdir
        self._jobs: dict[str, JobRecord] | None = None
        self._files: dict[str, dict[str, ArchivedFileRecord]] | None = None
        self._paths: dict[str, ArchivedFileRecord] | None = None

    def jobs(self) -> list[JobRecord]:
        if self._jobs is None:
            self._jobs = {job.name: job for job in grid_jobs(self.ledger, self.grid)}
        return list(self._jobs.values())

    def job(self, name: str) -> JobRecord:
        self.jobs()
        assert self._jobs is not None
        if name not in self._jobs:
            raise ResultsError(f"grid {self.grid!r} has no job {name!r} in the ledger")
        return self._jobs[name]

    def files(self, name: str) -> dict[str, ArchivedFileRecord]:
        """The job's archived files by archive-relative path, as the ledger recorded them."""
        if self._files is None:
            self._files = {}
            for job, path, size, sha256 in self.ledger.archived_files(self.grid):
                self._files.setdefault(job, {})[path] = ArchivedFileRecord(path, size, sha256)
        return self._files.get(name, {})

    def _by_path(self) -> dict[str, ArchivedFileRecord]:
        if self._paths is None:
            self.files("")
            assert self._files is not None
            self._paths = {path: record for files in self._files.values() for path, record in files.items()}
        return self._paths

    def species(self, name: str) -> list[str]:
        """Species whose line table was archived for the job."""
        prefix, suffix = onion_archive_path(self.grid, name, "linebt_"), ".out"
        return sorted(p[len(prefix):-len(suffix)] for p in self.files(name)
                      if p.startswith(prefix) and p.endswith(suffix))

    def fetch(self, path: str) -> Path:
        """A local copy of an archived file, verified against the ledger's sha256 when recorded.
        The caller may delete it; it is removed with the reader anyway."""
        local = self._workdir / path.replace("/", "__")
        stored = self.storage.fetch(path, local)
        recorded = self._by_path().get(path)
        if recorded is not None and (stored.size, stored.sha256) != (recorded.size, recorded.sha256):
            local.unlink(missing_ok=True)
            raise ResultsError(f"{path} in {self.storage.description} differs from what the ledger recorded "
                               f"(sha256 {stored.sha256[:12]} vs {recorded.sha256[:12]})")
        return local

    def model_outputs(self, job: str | _Named) -> ModelOutputs:
        """Profiles and line tables of one archived model (by name, JobRecord or ModelSpec)."""
        record = self.job(job if isinstance(job, str) else job.name)
        if not record.archived:
            raise ModelNotArchived(f"{record.name} is {record.state}, not archived"
                                   + (f": {record.reason}" if record.reason else ""))
        files = self.files(record.name)
        structure = structure_path(self.grid, record.name)
        if structure not in files:
            raise ResultsError(f"{record.name}: the ledger records no archived {structure}")
        local = self.fetch(structure)
        mapping = self.config.results
        try:
            profiles, abundances, notes = read_structure(local, mapping)
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{record.name}: cannot read {structure}: {exc}") from None
        finally:
            local.unlink(missing_ok=True)  # a big grid must not pile up copies
        lines: dict[str, LineTable] = {}
        for species in self.species(record.name):
            path = linebt_path(self.grid, record.name, species)
            try:
                copy = self.fetch(path)
            except (StorageError, ResultsError) as exc:  # one lost table blanks its lines, not the model
                if isinstance(exc, StorageError) and exc.transient:
                    raise  # the archive is unreachable: not this model's problem
                notes.append(f"line table of {species} unreadable: {exc}")
                continue
            try:
                lines[species] = parse_linebt(copy.read_text(errors="replace"), species, self._linebt_columns)
            except ValueError as exc:
                notes.append(str(exc))
            finally:
                copy.unlink(missing_ok=True)
        for species in self.config.kosma_tau.onion_species:
            if species not in lines and species not in self.species(record.name):
                notes.append(f"no line table archived for species {species}")
        columns = self._column_densities(record.name, files, notes)
        return ModelOutputs(record, profiles["depth_cm"], profiles["av"], profiles["tgas"], profiles["tdust"],
                            profiles["nh"], abundances, lines, tuple(notes), columns)

    @property
    def _linebt_columns(self) -> tuple[str, str, str, str]:
        m = self.config.results.linebt
        return m.transition, m.wavelength_um, m.intensity, m.peak_tb

    def _column_densities(self, name: str, files: Mapping[str, ArchivedFileRecord], notes: list[str]) -> dict[str, float]:
        path = chemistry_path(self.grid, name)
        if path not in files:
            return {}  # an optional output: no column densities, and nothing wrong
        try:
            copy = self.fetch(path)
        except (StorageError, ResultsError) as exc:
            if isinstance(exc, StorageError) and exc.transient:
                raise
            notes.append(f"chemistry file unreadable: {exc}")
            return {}
        try:
            columns, more = read_chemistry(copy, self.config.results)
        except (OSError, ValueError) as exc:
            columns, more = {}, [f"cannot read {path}: {exc}"]
        finally:
            copy.unlink(missing_ok=True)
        notes.extend(more)
        return columns

    def many_model_outputs(self, jobs: Iterable[JobRecord]) -> Iterator[tuple[JobRecord, ModelOutputs | Exception]]:
        """``model_outputs`` of each job, in order, reading up to the storage's ``concurrent_reads`` models at
        once (over SFTP each file costs round trips; one at a time, a large grid's report would wait on them).
        A model that cannot be read yields its ``ResultsError``/``StorageError`` instead; a transient
        ``StorageError`` (archive unreachable after retries) is raised and the remaining reads are cancelled."""
        jobs = list(jobs)
        self.jobs()  # fill the caches before threads share them
        self._by_path()
        workers = max(1, min(self.storage.concurrent_reads, len(jobs)))

        def read(job: JobRecord) -> ModelOutputs | Exception:
            try:
                return self.model_outputs(job)
            except (ResultsError, StorageError) as exc:
                if isinstance(exc, StorageError) and exc.transient:
                    raise
                return exc

        # A bounded window of reads ahead: a 10^5-model grid must not hold every model's profiles at once.
        window = 4 * workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pdrflow-read") as pool:
            pending: deque[tuple[JobRecord, Future[ModelOutputs | Exception]]] = deque()
            queue = iter(jobs)
            try:
                while True:
                    while len(pending) < window:
                        job = next(queue, None)
                        if job is None:
                            break
                        pending.append((job, pool.submit(read, job)))
                    if not pending:
                        return
                    job, future = pending.popleft()
                    yield job, future.result()
            finally:
                for _, future in pending:
                    future.cancel()


def _ledger_missing(config: Config) -> str | None:
    url = config.database.sqlalchemy_url()
    file = url.database if url.drivername.startswith("sqlite") and url.database != ":memory:" else None
    if file and not Path(file).exists():  # opening it would create an empty ledger
        return f"no ledger at {file}: has the grid been run?"
    return None


@contextmanager
def open_archive(config: Config) -> Iterator[ArchiveReader]:
    """The grid's ledger (read only) and archive, for reading results; closes both on exit."""
    problem = _ledger_missing(config)
    if problem:
        raise ResultsError(problem)
    ledger = Ledger(config.database.sqlalchemy_url(), create=False)
    try:
        if ledger.grid_id(config.grid.name) is None:
            raise ResultsError(f"the ledger has no grid {config.grid.name!r}: has it been run?")
        with open_storage(config.storage) as storage, tempfile.TemporaryDirectory(prefix="pdrflow-results-") as tmp:
            yield ArchiveReader(config, ledger, storage, Path(tmp))
    finally:
        ledger.close()


__all__ = [
    "ArchiveReader", "ArchivedFileRecord", "JobRecord", "LineTable", "ModelNotArchived", "ModelOutputs",
    "ResultsError", "StorageError", "c_co_transition_av", "cplus_c_transition_av", "crossing_av",
    "h_h2_transition_av", "model_scalars", "open_archive", "parse_linebt", "read_chemistry", "read_structure",
]
