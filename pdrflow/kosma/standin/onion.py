"""The stand-in line radiative transfer (``./onionexe <pdrstruct_s.hdf5>``). NOT KOSMA-tau.

Reads ``./ONION3.INP`` (``SPECIES <name>`` and ``LINE <transition> <wavelength_um>`` lines) and
``./CTRL_IND``, writes six files per species into ``onionoutput/`` and adds ``onion/<species>``
to the structure file (``transitions``, ``wavelength_um``, ``intensity_erg_s_cm2_sr``,
``peak_tb_K``), as the real onion modifies ``pdrstruct_s.hdf5``.

``linebt_<S>.out`` is a whitespace table, header line starting with ``#``:
``transition  wavelength_um  intensity_erg_s_cm2_sr  peak_tb_K``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import h5py
import numpy as np

from . import BANNER, KnobError, fail_with, faults_from_environment, print_version

EXIT_BAD_INPUT = 2
PLANCK_K = 6.62607e-27 / 1.380649e-16  # h/k [K s]
C_UM = 2.99792458e14  # speed of light [um/s]


def read_onion_input(path: Path) -> tuple[str, list[tuple[str, float]]]:
    species, lines = None, []
    for raw in path.read_text().splitlines():
        words = raw.split()
        if words[:1] == ["SPECIES"] and len(words) == 2:
            species = words[1]
        elif words[:1] == ["LINE"] and len(words) == 3:
            lines.append((words[1], float(words[2])))
    if species is None or not lines:
        raise ValueError(f"{path} names no SPECIES or no LINE")
    return species, lines


def line_emission(structure: h5py.File, species: str, wavelength_um: float) -> tuple[float, float]:
    """(intensity, peak brightness temperature): escape-probability-flavoured, monotonic scalings."""
    depth = structure["depth_cm"][()]
    density = structure["nh"][()] * structure[f"abundances/{species}"][()]
    column = float((0.5 * (density[1:] + density[:-1]) * np.diff(depth)).sum())
    tgas = structure["tgas"][()]
    weight = density / max(float(density.sum()), 1e-300)
    t_exc = float((tgas * weight).sum())
    energy_k = PLANCK_K * C_UM / wavelength_um  # upper level energy ~ hν/k
    tau = column / 1e16 * (wavelength_um / 158.0)
    peak_tb = t_exc * math.exp(-energy_k / max(t_exc, 1.0)) * (1.0 - math.exp(-tau))
    intensity = 2 * 1.380649e-16 * peak_tb * 1e5 * (C_UM / wavelength_um) ** 3 / (2.99792458e10) ** 3
    return intensity, peak_tb


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        return print_version("onionexe")
    print(BANNER, flush=True)
    if len(sys.argv) != 2:
        return fail_with("usage: onionexe <absolute path of pdroutput/pdrstruct_s.hdf5>", EXIT_BAD_INPUT)
    try:
        faults = faults_from_environment()
    except KnobError as exc:
        return fail_with(str(exc), EXIT_BAD_INPUT)
    cwd = Path.cwd()
    structure_path = Path(sys.argv[1])
    try:
        species, transitions = read_onion_input(cwd / "ONION3.INP")
    except (OSError, ValueError) as exc:
        return fail_with(f"cannot read ONION3.INP: {exc}", EXIT_BAD_INPUT)
    if not (cwd / "CTRL_IND").is_file():
        return fail_with("CTRL_IND is missing (the PDR run did not finish)", EXIT_BAD_INPUT)
    if not structure_path.is_file():
        return fail_with(f"{structure_path} does not exist", EXIT_BAD_INPUT)
    if faults.fails("onion", species):
        return fail_with(f"onion for {species} failed (injected by PDRFLOW_STANDIN_FAIL)", faults.exit_code)
    out = cwd / "onionoutput"
    out.mkdir(exist_ok=True)
    with h5py.File(structure_path, "a") as structure:
        if f"abundances/{species}" not in structure:
            return fail_with(f"species {species} is not in {structure_path}", EXIT_BAD_INPUT)
        results = [(name, wl, *line_emission(structure, species, wl)) for name, wl in transitions]
        group = structure.require_group("onion").require_group(species)
        for key in list(group):
            del group[key]
        group.create_dataset("transitions", data=np.array([r[0].encode() for r in results]), track_times=False)
        for index, key in ((1, "wavelength_um"), (2, "intensity_erg_s_cm2_sr"), (3, "peak_tb_K")):
            group.create_dataset(key, data=np.array([r[index] for r in results]), track_times=False)
        av = structure["av"][()]
        emissivity = structure["nh"][()] * structure[f"abundances/{species}"][()]
    table = "".join(f"{n:<16} {wl:12.4f} {i:14.6e} {tb:12.5f}\n" for n, wl, i, tb in results)
    (out / f"linebt_{species}.out").write_text(
        "# transition  wavelength_um  intensity_erg_s_cm2_sr  peak_tb_K  (pdrflow stand-in, NOT KOSMA-tau)\n" + table)
    profile = "".join(f"{a:12.5e} {e:12.5e}\n" for a, e in zip(av[::10], emissivity[::10], strict=True))
    for name in (f"jerg_{species}.smli", f"jerg_{species}.srli", f"jtemp_{species}.smli", f"jtemp_{species}.smlc"):
        (out / name).write_text(f"# {name}: A_V, emissivity (pdrflow stand-in)\n" + profile)
    (out / f"ONION3_{species}.OUT").write_text(f"stand-in onion for {species}: {len(results)} lines\n" + table)
    print(f"onion for {species} finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
