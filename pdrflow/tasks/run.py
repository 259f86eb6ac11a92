"""The model task: run KOSMA-tau for one job in a fresh scratch directory on the worker.

Steps follow the file contract: make the scratch tree, render the inputs, run ``./pdrexe``,
then ``./onionexe`` once per species; stop at the first failing step and keep its TEXTOUT
and inputs. Returns the manifest of staged outputs; the archival is a separate task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distributed import Reschedule

from ..config import default_scratch_root
from ..errors import ModelFailed
from ..kosma import layout
from ..kosma.inputs import CHEM_RATES_LINK, render_inputs
from ..storage.base import sha256_file
from .resources import (
    drop_worker_restrictions,
    model_in_progress,
    remaining_lifetime,
    task_ledger,
    tracked_process_group,
    worker_name,
)
from .types import MANIFEST_FILE, Manifest, ModelJob, RunSettings, StagedFile

SCRATCH_MARKER = ".pdrflow-scratch.json"  # in each scratch dir: grid, job id, model name


class _StepFailed(Exception):
    pass


class ModelInterrupted(Exception):
    """The driver stopped while the model ran: the job goes back to pending, not failed."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, path.stat().st_size - 2000))
            lines = [line.strip() for line in stream.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


@functools.cache
def _die_with_worker_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` where util-linux's setpriv supports it, else nothing.

    A step runs in its own session (so a timeout can kill its group), which also means a worker
    killed with SIGKILL would leave it running for hours, unowned, while the model is redone
    elsewhere. The parent-death signal kills it with the worker thread that waits for it.
    (setpriv instead of a preexec_fn: that is unsafe in a process with threads, as a worker is.)
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        probe = subprocess.run([setpriv, "--pdeathsig", "KILL", "--", "true"], capture_output=True, timeout=10,
                               check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if probe.returncode == 0 else ()


def _run_step(argv: list[str], cwd: Path, log: Path, timeout: float, label: str) -> int:
    """Run one executable with its output in ``log``; kill its whole process group on timeout."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*_die_with_worker_prefix(), *argv], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    # A timer instead of wait(timeout=...): that polls with sleeps, ~30 ms lost per short step.
    timer = threading.Timer(timeout, kill_on_timeout)
    stopping = threading.Event()
    try:
        with tracked_process_group(process.pid) as stopping:
            timer.start()
            code = process.wait()
    except BaseException:
        # Worker shutting down or task cancelled: never leave KOSMA-tau running unowned.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise _StepFailed(f"{label} exceeded its timeout of {timeout:g} s and was killed")
    if code != 0 and stopping.is_set():
        raise ModelInterrupted(f"{label} was stopped with the driver")
    if code != 0:
        detail = _last_line(log)
        raise _StepFailed(f"{label} exited with code {code}" + (f"; last output: {detail}" if detail else ""))
    return code


def _copy_inputs(source: Path, target: Path, skip: frozenset[str] = frozenset()) -> None:
    """Copy the input tree ``source`` to ``target``: real directories, the files' bytes (links followed).

    Not shutil.copytree: that copies directory modes, and a read-only installation would give a
    scratch dir that can be neither written (by a code that writes its inputs) nor removed.
    Files keep their mode bits plus the owner's write bit. ``skip``: names left out at the top.
    """
    target.mkdir(exist_ok=True)
    for directory, subdirs, files in os.walk(source, followlinks=True):
        here = Path(directory)
        into = target / here.relative_to(source)
        real_here = here.resolve()
        if here == source:
            subdirs[:] = [name for name in subdirs if name not in skip]
        for name in list(subdirs):
            real = (here / name).resolve()
            if real == real_here or real in real_here.parents:  # a link back up: would recurse forever
                subdirs.remove(name)
                continue
            (into / name).mkdir()
        for name in files:
            if (here == source and name in skip) or not (here / name).exists():
                continue  # skipped, or a dangling link: nothing to copy (the code would not find it either)
            shutil.copyfile(here / name, into / name)
            (into / name).chmod(((here / name).stat().st_mode & 0o7777) | 0o200)


def prepare_scratch(job: ModelJob, settings: RunSettings) -> Path:
    """A fresh directory with copies of the installation's inputs, links to its executables and the rendered inputs."""
    inst = settings.installation
    root = settings.scratch_root or default_scratch_root()  # None: node-local, resolved on this worker
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new scratch root is owner-only; an existing one kept
    scratch = root / f"{settings.grid}-{job.spec.name}-job{job.job_id}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(mode=0o700)  # inputs and outputs of one model: the user's only
    # What lets `pdrflow clean` prove the directory is this job's scratch before it removes anything.
    (scratch / SCRATCH_MARKER).write_text(json.dumps({"grid": settings.grid, "job_id": job.job_id,
                                                      "name": job.spec.name}))
    for directory in (layout.PDR_OUTPUT_DIR, layout.ONION_OUTPUT_DIR, layout.MCDRT_DIR):
        (scratch / directory).mkdir()
    # Copies, never links: a step that writes into its inputs must not change the home every model shares.
    _copy_inputs(inst.home / "pdrinpdata", scratch / "pdrinpdata", skip=frozenset({"chem_rates.dat"}))
    shutil.copyfile(inst.chem_rates, scratch / CHEM_RATES_LINK)  # the chosen rate file, under the code's name
    for directory in ("onioninpdata", "In"):
        if (inst.home / directory).is_dir():
            _copy_inputs(inst.home / directory, scratch / directory)
    (scratch / "pdrexe").symlink_to(inst.pdr_executable)
    (scratch / "onionexe").symlink_to(inst.onion_executable)
    for helper in inst.helpers:
        (scratch / helper.name).symlink_to(helper)
    spec = job.spec
    pdrnew, pdr_config = render_inputs(spec.name, spec.parameters, spec.network_species, spec.elements,
                                       inst.templates)
    (scratch / "PDRNEW.INP").write_text(pdrnew)
    (scratch / "pdr_config.json").write_text(pdr_config)
    return scratch


def _tar_mcdrt(scratch: Path) -> bool:
    """Pack Out/ reproducibly (sorted members, zero times) so identical runs give identical bytes."""
    out_dir = scratch / layout.MCDRT_DIR
    members = sorted(p for p in out_dir.rglob("*"))
    if not members:
        return False

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with open(scratch / layout.MCDRT_TARBALL, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0
    ) as zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(out_dir, arcname=layout.MCDRT_DIR, recursive=False, filter=normalize)
        for member in members:
            tar.add(member, arcname=str(member.relative_to(scratch)), recursive=False, filter=normalize)
    return True


def execute_model(job: ModelJob, settings: RunSettings, scratch: Path, exit_codes: dict[str, Any]) -> None:
    inst = settings.installation
    exit_codes["pdr"] = _run_step(
        ["./pdrexe"], scratch, scratch / layout.PDR_OUTPUT_DIR / "TEXTOUT", settings.pdr_timeout, "PDR (pdrexe)"
    )
    if not (scratch / layout.PDR_OUTPUT_DIR / "CTRL_IND").is_file():
        raise _StepFailed(f"PDR (pdrexe) exited 0 but wrote no {layout.PDR_OUTPUT_DIR}/CTRL_IND")
    onion_codes: dict[str, int] = {}
    exit_codes["onion"] = onion_codes
    textout = scratch / layout.ONION_OUTPUT_DIR / "TEXTOUT"
    structure = (scratch / layout.PDR_OUTPUT_DIR / "pdrstruct_s.hdf5").absolute()
    for species in job.spec.onion_species:
        shutil.copyfile(inst.onion_input(species), scratch / "ONION3.INP")
        shutil.copyfile(scratch / layout.PDR_OUTPUT_DIR / "CTRL_IND", scratch / "CTRL_IND")
        textout.unlink(missing_ok=True)
        try:
            onion_codes[species] = _run_step(
                ["./onionexe", str(structure)], scratch, textout, settings.onion_timeout, f"onion for {species}"
            )
        finally:
            if textout.exists():
                shutil.copyfile(textout, scratch / layout.onion_textout(species))


def collect_manifest(job: ModelJob, settings: RunSettings, scratch: Path, provenance: dict[str, Any]) -> Manifest:
    """The staged outputs. A missing required output fails the model; the other expected ones are
    optional (the real code writes them depending on IHDFOUT, IFUVMETH, IDUSTMET): recorded as missing."""
    _tar_mcdrt(scratch)
    required = set(settings.required_outputs)
    files = []
    missing = []
    for source, target in layout.staged_files(settings.grid, job.spec.name, job.spec.onion_species, True):
        path = scratch / source
        if not path.is_file():
            if source in required:
                raise _StepFailed(f"the model finished but did not write {source} (kosma_tau.required_outputs)")
            missing.append(source)
            continue
        size, digest = sha256_file(path)
        files.append(StagedFile(source, target, size, digest))
    return Manifest(job.job_id, job.spec.name, str(scratch), socket.gethostname(), worker_name(), tuple(files),
                    provenance, tuple(missing))


def stage_outputs(manifest: Manifest, staging_root: Path) -> Manifest:
    """Move a computed model's outputs from node-local scratch to the shared staging directory.

    For compute nodes that cannot reach the archive: workers on the driver's host archive them from
    there (cluster.slurm.archive_workers). Copied file by file with their digests checked, the manifest
    written last (a staged dir without it is not staged), and only then the node-local scratch removed.
    """
    scratch = Path(manifest.scratch_dir)
    staging_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = staging_root / scratch.name
    staged.mkdir(mode=0o700)
    shutil.copyfile(scratch / SCRATCH_MARKER, staged / SCRATCH_MARKER)  # `pdrflow clean` can prove it is ours
    for entry in manifest.files:
        target = staged / entry.source
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch / entry.source, target)
        if sha256_file(target) != (entry.size, entry.sha256):
            raise _StepFailed(f"staging {entry.source} to {staged}: the copy differs from the output")
    moved = dataclasses.replace(manifest, scratch_dir=str(staged))
    (staged / MANIFEST_FILE).write_text(moved.to_json())
    shutil.rmtree(scratch, ignore_errors=True)
    return moved


def _staged_here(staged_dir: str) -> bool:
    return (Path(staged_dir) / MANIFEST_FILE).is_file()


def _staged_manifest(staged_dir: str) -> Manifest:
    # this worker reads the staged files now: the archival is pinned here, not to the dead worker
    manifest = Manifest.from_json((Path(staged_dir) / MANIFEST_FILE).read_text())
    return dataclasses.replace(manifest, host=socket.gethostname(), worker=worker_name())


def run_model(job: ModelJob, settings: RunSettings) -> Manifest:
    """The Dask task. Raises ModelFailed (job ``failed_model``) when a step fails."""
    remaining = remaining_lifetime()
    if remaining is not None and (remaining <= 0 or (job.needs_seconds is not None and remaining < job.needs_seconds)):
        # This worker retires before the model could finish (or only archives now, before it retires):
        # let the scheduler place the model elsewhere.
        time.sleep(min(2.0, remaining) if remaining > 0 else 2.0)  # no hot loop while this worker is the only one
        drop_worker_restrictions()
        raise Reschedule()
    with model_in_progress() as staged:
        manifest = _run_model(job, settings)
        if settings.staging_root is None:  # node-local: the worker must not retire before they are archived
            staged.append(manifest.scratch_dir)
    return dataclasses.replace(manifest, takes_models_for=remaining_lifetime())


def _run_model(job: ModelJob, settings: RunSettings) -> Manifest:
    host = socket.gethostname()
    inst = settings.installation
    exit_codes: dict[str, Any] = {}
    provenance: dict[str, Any] = {
        "host": host,
        "worker": worker_name(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "standin": inst.standin,
        "pdr_executable": {"path": str(inst.pdr_executable), "sha256": inst.identity.pdr_sha256,
                           "revision": settings.pdr_version.revision, "compiled": settings.pdr_version.compiled},
        "onion_executable": {"path": str(inst.onion_executable), "sha256": inst.identity.onion_sha256,
                             "revision": settings.onion_version.revision,
                             "compiled": settings.onion_version.compiled},
        "chem_rates": {"file": inst.chem_rates.name, "sha256": inst.identity.chem_rates_sha256},
        "model": job.spec.to_json(),
        "exit_codes": exit_codes,
        "started": _now(),
    }
    with task_ledger(settings) as ledger:
        start = ledger.start_model(job.job_id, host, worker_name(), os.environ.get("SLURM_JOB_ID"),
                                   staged_readable=_staged_here)
    if start.attempt_id is None:
        assert start.staged_dir is not None
        return _staged_manifest(start.staged_dir)  # computed before, its result lost by Dask: archive it
    attempt_id = start.attempt_id
    scratch: Path | None = None
    error: str | None = None
    manifest: Manifest | None = None
    try:
        scratch = prepare_scratch(job, settings)
        provenance["scratch_dir"] = str(scratch)
        execute_model(job, settings, scratch, exit_codes)
        provenance["ended"] = _now()
        manifest = collect_manifest(job, settings, scratch, provenance)
        (scratch / MANIFEST_FILE).write_text(manifest.to_json())
        if settings.staging_root is not None:
            manifest = stage_outputs(manifest, settings.staging_root)
            scratch = Path(manifest.scratch_dir)
    except _StepFailed as exc:
        error = str(exc)
    except ModelInterrupted:
        # The driver (stopping) or Dask (re-running it elsewhere) owns the job now; the job is requeued
        # and runs again in a fresh directory, so this half-written one would only be left behind.
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    except OSError as exc:
        error = f"cannot prepare or read the scratch directory: {exc.strerror or exc} ({exc.filename})"
    provenance.setdefault("ended", _now())
    with task_ledger(settings) as ledger:
        recorded = ledger.finish_model(job.job_id, attempt_id, error=error,
                                       staged_dir=str(scratch) if scratch else None, host=host,
                                       provenance=provenance, missing_outputs=manifest.missing if manifest else ())
    if not recorded:  # given up while it ran: another run has the job now; these outputs are no one's
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise ModelInterrupted(f"job {job.job_id}: this run was given up while it ran (its worker counted as lost)")
    if error is not None:
        if scratch is not None and not settings.keep_failed:
            shutil.rmtree(scratch, ignore_errors=True)
        raise ModelFailed(job.job_id, error)
    assert manifest is not None
    return manifest
