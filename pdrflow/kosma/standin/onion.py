"""The stand-in line radiative transfer (``./onionexe <pdrstruct_s.hdf5>``). NOT KOSMA-tau's onion.

Run in the scratch root. Reads ``./ONION3.INP`` (format in lines.py), ``./CTRL_IND`` (written by the
stand-in pdrexe; refuses to run without it, like the real code) and the structure file named on the
command line. Writes, for species S (name exactly as in ONION3.INP), into ``onionoutput/``:

- ``linebt_S.out``: whitespace table, one row per transition, after header lines starting with ``#``;
  the last header line names the columns
  ``# transition  wavelength_um  intensity_erg_s_cm2_sr  peak_tb_K``.
  intensity = integrated line intensity averaged over the projected clump [erg s^-1 cm^-2 sr^-1];
  peak_tb = line-centre brightness temperature above the background, averaged likewise [K].
- ``jerg_S.smli`` / ``jtemp_S.smli``: integrated intensity / line-centre Tb per ray, rows = p/RTOT,
  one column per transition; ``jtemp_S.smlc``: the same Tb with the dust continuum included;
  ``jerg_S.srli``: central ray, intensity emerging from the layer between the surface and each depth.
- ``ONION3_S.OUT``: a readable summary (width, optical depths, the linebt table).

It also rewrites group ``/onion/S`` of the structure file (as the real onion modifies
``pdrstruct_s.hdf5``): datasets ``transitions`` (fixed-length ASCII), ``wavelength_um``,
``intensity_erg_s_cm2_sr``, ``peak_tb_K``, ``tau_centre``, ``impact_parameter`` (p/RTOT) and
``tb_profile_K`` (transitions x rays); attribute ``line_width_kms``. All output is deterministic.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from . import BANNER, EXIT_BAD_INPUT, KnobError, fail_with, faults_from_environment, print_version
from .lines import Clump, LineResult, Transition, line_width_kms, read_onion_input, surface_profile, transfer
from .physics import STANDIN_LABEL

LINEBT_HEADER = "# transition  wavelength_um  intensity_erg_s_cm2_sr  peak_tb_K"
_REQUIRED = ("radius_cm", "nh", "tgas", "tdust")


class OnionError(Exception):
    pass


def read_ctrl_ind(path: Path) -> int:
    """The number of depth points the PDR run wrote (CTRL_IND's NPOINTS card)."""
    try:
        text = path.read_text()
    except OSError as exc:
        reason = exc.strerror or exc
        raise OnionError(f"CTRL_IND is missing or unreadable ({reason}); did the PDR run finish?") from None
    for raw in text.splitlines():
        words = raw.split()
        if len(words) == 2 and words[0] == "NPOINTS" and words[1].isdigit():
            return int(words[1])
    raise OnionError("CTRL_IND has no NPOINTS card (not written by the stand-in pdrexe?)")


def load_clump(structure: h5py.File, species: str, points: int) -> tuple[Clump, float]:
    """The clump profiles for ``species`` and the line width from the structure file."""
    missing = [name for name in (*_REQUIRED, f"abundances/{species}") if name not in structure]
    if missing:
        raise OnionError(f"{structure.filename} lacks {', '.join(missing)}")
    radius = structure["radius_cm"][()]
    if len(radius) != points:
        raise OnionError(f"CTRL_IND says {points} depth points but {structure.filename} has {len(radius)}")
    clump = Clump.from_depth_profiles(radius, structure["nh"][()], structure["tgas"][()], structure["tdust"][()],
                                      structure[f"abundances/{species}"][()], float(structure.attrs["zmetal"]))
    width = line_width_kms(float(structure.attrs["beta"]), float(structure.attrs["rtot"]))
    return clump, width


def store_results(structure: h5py.File, species: str, results: Sequence[LineResult]) -> None:
    onion = structure.require_group("onion")
    if species in onion:
        del onion[species]  # a rerun replaces, never appends
    group = onion.create_group(species)
    group.attrs["line_width_kms"] = results[0].width_kms
    group.attrs["standin"] = STANDIN_LABEL
    names = [r.transition.name.encode("ascii") for r in results]
    columns: dict[str, np.ndarray] = {
        "transitions": np.array(names, dtype=f"S{max(len(n) for n in names)}"),
        "wavelength_um": np.array([r.transition.wavelength_um for r in results]),
        "intensity_erg_s_cm2_sr": np.array([r.intensity(r.mean_tb) for r in results]),
        "peak_tb_K": np.array([r.mean_tb for r in results]),
        "tau_centre": np.array([r.tau_centre for r in results]),
        "impact_parameter": results[0].impact,
        "tb_profile_K": np.vstack([r.tb_line for r in results]),
    }
    for key, values in columns.items():
        group.create_dataset(key, data=values, track_times=False)


def _table(header: str, names: list[str], rows: np.ndarray, first: np.ndarray, first_name: str) -> str:
    lines = [f"# pdrflow stand-in onion, NOT KOSMA-tau: {header}", f"# {first_name}  " + "  ".join(names)]
    lines += [" ".join(f"{v:14.6e}" for v in (x, *row)) for x, row in zip(first, rows, strict=True)]
    return "\n".join(lines) + "\n"


def linebt_table(results: Sequence[LineResult]) -> str:
    rows = [f"{r.transition.name:<18} {r.transition.wavelength_um:12.4f} {r.intensity(r.mean_tb):14.6e} "
            f"{r.mean_tb:12.5e}" for r in results]
    return "\n".join([LINEBT_HEADER, *rows]) + "\n"


def write_outputs(out: Path, species: str, clump: Clump, results: Sequence[LineResult]) -> None:
    names = [r.transition.name for r in results]
    impact = results[0].impact
    tb = np.column_stack([r.tb_line for r in results])
    total = np.column_stack([r.tb_total for r in results])
    intensity = np.column_stack([r.intensity(r.tb_line) for r in results])
    depth, _ = surface_profile(clump, results[0].transition, results[0].width_kms)
    slab = np.column_stack([surface_profile(clump, r.transition, r.width_kms)[1] for r in results])
    files = {
        f"jerg_{species}.smli": _table("integrated intensity per ray [erg s^-1 cm^-2 sr^-1]", names, intensity,
                                       impact, "p_over_R"),
        f"jerg_{species}.srli": _table("central ray, intensity emerging from surface..depth "
                                       "[erg s^-1 cm^-2 sr^-1]", names, slab, depth, "depth_cm"),
        f"jtemp_{species}.smli": _table("line-centre Tb above background per ray [K]", names, tb, impact,
                                        "p_over_R"),
        f"jtemp_{species}.smlc": _table("line + dust continuum Tb above background per ray [K]", names, total,
                                        impact, "p_over_R"),
        f"linebt_{species}.out": f"# pdrflow stand-in onion, NOT KOSMA-tau: species {species}\n"
                                 + linebt_table(results),
        f"ONION3_{species}.OUT": summary(species, results),
    }
    for name, text in files.items():
        (out / name).write_text(text)


def summary(species: str, results: Sequence[LineResult]) -> str:
    width = results[0].width_kms
    lines = [BANNER, f"species {species}, line width (FWHM) {width:.4f} km/s, {len(results)} transitions", "",
             "transition          tau_centre  peak_tb_centre_K"]
    lines += [f"{r.transition.name:<18} {r.tau_centre:11.4e} {r.tb_line[0]:12.5e}" for r in results]
    return "\n".join([*lines, "", linebt_table(results)])


def _transitions_of(argv: list[str], cwd: Path) -> tuple[str, list[Transition], Path, int]:
    if len(argv) != 1:
        raise OnionError("usage: onionexe <absolute path of pdroutput/pdrstruct_s.hdf5>")
    try:
        species, transitions = read_onion_input(cwd / "ONION3.INP")
    except ValueError as exc:
        raise OnionError(f"ONION3.INP: {exc}") from None
    points = read_ctrl_ind(cwd / "CTRL_IND")
    structure_path = Path(argv[0])
    if not structure_path.is_file():
        raise OnionError(f"structure file {structure_path} does not exist")
    return species, transitions, structure_path, points


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        return print_version("onionexe")
    print(BANNER, flush=True)
    try:
        faults = faults_from_environment()
        species, transitions, structure_path, points = _transitions_of(sys.argv[1:], Path.cwd())
    except (KnobError, OnionError) as exc:
        return fail_with(str(exc), EXIT_BAD_INPUT)
    print(f"onion for {species}: {len(transitions)} transitions, structure {structure_path}", flush=True)
    if faults.fails("onion", species):
        return fail_with(f"onion for {species} failed (injected by PDRFLOW_STANDIN_FAIL={faults.fail})",
                         faults.exit_code)
    out = Path.cwd() / "onionoutput"
    try:
        out.mkdir(exist_ok=True)
        with h5py.File(structure_path, "r") as structure:
            clump, width = load_clump(structure, species, points)
        results = transfer(clump, transitions, width)
        write_outputs(out, species, clump, results)
        with h5py.File(structure_path, "a") as structure:
            store_results(structure, species, results)
    except (OnionError, OSError, KeyError) as exc:
        return fail_with(f"onion for {species}: {exc}", EXIT_BAD_INPUT)
    for r in results:
        print(f"  {r.transition.name:<18} peak Tb {r.mean_tb:10.4e} K  tau_centre {r.tau_centre:10.4e}", flush=True)
    print(f"onion for {species} finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
