"""One grid's archived outputs, read through the storage backend and checked against the ledger."""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from ..config import Config
from ..kosma.layout import PDR_OUTPUT_DIR, onion_archive_path, pdr_archive_path
from ..ledger import Ledger
from ..ledger.queries import JobRecord, grid_jobs
from ..storage import Storage, StorageError, open_storage
from .formats import parse_linebt, read_chemistry, read_structure
from .outputs import (
    ArchivedFileRecord,
    LineTable,
    ModelNotArchived,
    ModelOutputs,
    ResultsError,
)

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
