"""The stand-in PDR program (``./pdrexe`` in a model's scratch dir). NOT KOSMA-tau.

Run with no arguments in the scratch root: reads ``PDRNEW.INP`` (positionally, like the Fortran code)
and ``pdr_config.json`` (they must agree, else exit 3; see pdrinput.py), needs the chemical rate file
at the fixed path ``pdrinpdata/chem_rates.dat``, and
writes ``pdroutput/{pdrstruct_s.hdf5, pdrchem_c.hdf5, pdrout.hdf, chemchk.out, CTRL_IND}`` plus
``Out/{mrt_summary.dat, fuv_field.dat}`` when IFUVMETH = 1. Layouts: physics.py. CTRL_IND is written
last, so its presence means the run finished. ``--version`` prints the revision lines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import (
    BANNER,
    EXIT_BAD_INPUT,
    EXIT_INCONSISTENT,
    KnobError,
    fail_with,
    faults_from_environment,
    print_version,
    revision,
)
from .pdrinput import InconsistentInputs, InputError, read_model
from .physics import (
    POINTS,
    SPECIES,
    STANDIN_LABEL,
    Model,
    column_densities,
    profiles,
    transitions,
    write_chemistry,
    write_structure,
)


def _print_parameters(model: Model, rates: Path) -> None:
    print("Physical input parameters:", flush=True)
    for key, value in model.attributes().items():
        print(f"  {key:<12} {value!r}", flush=True)
    print(f"  chemical rates: {rates}", flush=True)
    unmodelled = sorted(set(model.network_species) - set(SPECIES))
    if unmodelled:
        print(f"  note: the stand-in models only {' '.join(SPECIES)}; ignored: {' '.join(unmodelled)}", flush=True)


def placeholder_hdf4(model: Model) -> bytes:
    """pdrout.hdf: the real code writes HDF4; the stand-in writes a labelled text placeholder."""
    header = f"{STANDIN_LABEL}: placeholder for KOSMA-tau's HDF4 pdrout.hdf (this is not HDF4)\n"
    return (header + json.dumps(model.attributes(), sort_keys=True) + "\n").encode()


def chemistry_check(model: Model, data: Mapping[str, np.ndarray]) -> str:
    """chemchk.out: element conservation (species sum / element abundance), surface and centre."""
    z = model.zmetal
    budgets = {"C": ("C+", "C", "CO"), "13C": ("13C+", "13C", "13CO"), "O": ("O", "CO", "13CO", "OH")}
    lines = [f"{STANDIN_LABEL}: chemistry check", "element   expected      surface_sum   centre_sum"]
    for element, members in budgets.items():
        expected = model.element(element) * z
        total = np.sum([data[f"abundances/{name}"] for name in members], axis=0)
        lines.append(f"{element:<8} {expected:12.5e} {total[0]:13.5e} {total[-1]:12.5e}")
    lines += ["", "species   surface       centre        column_cm-2"]
    columns = column_densities(data)
    for name in SPECIES:
        values = data[f"abundances/{name}"]
        lines.append(f"{name:<8} {values[0]:12.5e} {values[-1]:12.5e} {columns[name]:12.5e}")
    return "\n".join(lines) + "\n"


def write_mcdrt(out_dir: Path, model: Model, data: Mapping[str, np.ndarray]) -> None:
    """Out/: what the MCDRT dust radiative transfer (mrt.exe) leaves behind, stand-in flavour."""
    out_dir.mkdir(exist_ok=True)
    (out_dir / "mrt_summary.dat").write_text(
        f"{STANDIN_LABEL}: MCDRT summary\nsint {model.sint!r}\nzmetal {model.zmetal!r}\n"
        f"av_centre {data['av'][-1]:.6e}\ntdust_surface {data['tdust'][0]:.6e}\n")
    rows = "".join(f"{d:14.6e} {a:14.6e} {f:14.6e} {t:12.5e}\n"
                   for d, a, f, t in zip(data["depth_cm"], data["av"], data["fuv"], data["tdust"], strict=True))
    (out_dir / "fuv_field.dat").write_text("# depth_cm  av  fuv_draine  tdust_K (pdrflow stand-in)\n" + rows)


def write_outputs(root: Path, model: Model, data: Mapping[str, np.ndarray], pad_mb: float) -> None:
    out = root / "pdroutput"
    out.mkdir(exist_ok=True)
    write_structure(out / "pdrstruct_s.hdf5", model, data, pad_mb, revision())
    write_chemistry(out / "pdrchem_c.hdf5", model, data)
    (out / "pdrout.hdf").write_bytes(placeholder_hdf4(model))
    (out / "chemchk.out").write_text(chemistry_check(model, data))
    if model.ifuvmeth == 1:
        write_mcdrt(root / "Out", model, data)
    # Last: onion and the orchestrator take CTRL_IND as proof of a finished run.
    (out / "CTRL_IND").write_text(f"* {STANDIN_LABEL}: control indices for onionexe\nNPOINTS {POINTS}\n"
                                  f"IFUVMETH {model.ifuvmeth}\n")


def _summary(model: Model, data: Mapping[str, np.ndarray]) -> None:
    where = transitions(model)
    print(f"A_V at the centre {data['av'][-1]:.4g}; H/H2 at A_V {where.av_h2:.3g}, C+/C at {where.av_cplus:.3g},"
          f" C/CO at {where.av_co:.3g}", flush=True)
    print(f"T_gas surface {data['tgas'][0]:.4g} K, centre {data['tgas'][-1]:.4g} K; T_dust surface"
          f" {data['tdust'][0]:.4g} K", flush=True)


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        return print_version("pdrexe")
    print(BANNER, flush=True)
    if sys.argv[1:]:
        return fail_with(f"pdrexe takes no arguments (or --version), got {sys.argv[1:]}", EXIT_BAD_INPUT)
    root = Path.cwd()
    try:
        faults = faults_from_environment()
        model, rates = read_model(root)
    except (KnobError, InputError, ValueError) as exc:
        return fail_with(str(exc), EXIT_BAD_INPUT)
    except InconsistentInputs as exc:
        return fail_with(f"inconsistent inputs: {exc}", EXIT_INCONSISTENT)
    _print_parameters(model, rates)
    print("computing the stand-in PDR structure", flush=True)
    if faults.seconds:
        time.sleep(faults.seconds)
    if faults.fails("pdr"):
        return fail_with("PDR run failed (injected by PDRFLOW_STANDIN_FAIL=pdr)", faults.exit_code)
    data = profiles(model)
    _summary(model, data)
    try:
        write_outputs(root, model, data, faults.output_mb)
        for name in faults.skip:  # PDRFLOW_STANDIN_SKIP: outputs this run leaves out
            (root / "pdroutput" / name).unlink(missing_ok=True)
    except OSError as exc:
        return fail_with(f"cannot write the outputs: {exc}", EXIT_BAD_INPUT)
    print("PDR model finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
