"""The stand-in PDR program (``./pdrexe`` in a model's scratch dir). NOT KOSMA-tau."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from . import BANNER, KnobError, fail_with, faults_from_environment, print_version
from .physics import Model, profiles, write_chemistry, write_structure

EXIT_BAD_INPUT = 2
EXIT_INCONSISTENT = 3
_CHECKED = {"XNSUR": "xnsur", "RTOT": "rtot", "SINT": "sint", "ZMETAL": "zmetal"}


def read_pdrnew(path: Path) -> dict[str, float]:
    """The values of the cards we cross-check, from the description/value line pairs."""
    lines = path.read_text().splitlines()
    values: dict[str, float] = {}
    for index, line in enumerate(lines[:-1]):
        words = line.replace(":", " ").split()
        for card in _CHECKED:
            if card in words and card not in values:
                values[card] = float(lines[index + 1].strip().replace("d", "e").replace("D", "e"))
    missing = sorted(set(_CHECKED) - set(values))
    if missing:
        raise ValueError(f"PDRNEW.INP lacks {', '.join(missing)}")
    return values


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        return print_version("pdrexe")
    if sys.argv[1:]:
        return fail_with(f"pdrexe takes no arguments, got {sys.argv[1:]}", EXIT_BAD_INPUT)
    print(BANNER, flush=True)
    try:
        faults = faults_from_environment()
    except KnobError as exc:
        return fail_with(str(exc), EXIT_BAD_INPUT)
    cwd = Path.cwd()
    try:
        card_values = read_pdrnew(cwd / "PDRNEW.INP")
        config = json.loads((cwd / "pdr_config.json").read_text())
        model = Model.from_config(config)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        return fail_with(f"cannot read the model inputs: {exc}", EXIT_BAD_INPUT)
    for card, key in _CHECKED.items():
        if not math.isclose(card_values[card], getattr(model, key), rel_tol=1e-9):
            return fail_with(f"PDRNEW.INP {card}={card_values[card]!r} but pdr_config.json {key}="
                             f"{getattr(model, key)!r}", EXIT_INCONSISTENT)
    rates = cwd / "pdrinpdata" / "chem_rates.dat"
    if not rates.is_file():
        return fail_with(f"chemical rate file {rates} is missing", EXIT_BAD_INPUT)
    print(f"model: n={model.xnsur:g} cm^-3, chi={model.sint:g}, Z={model.zmetal:g}, R={model.rtot:g} cm", flush=True)
    if faults.seconds:
        time.sleep(faults.seconds)
    if faults.fails("pdr"):
        return fail_with("PDR run failed (injected by PDRFLOW_STANDIN_FAIL=pdr)", faults.exit_code)
    out = cwd / "pdroutput"
    out.mkdir(exist_ok=True)
    data = profiles(model)
    write_structure(out / "pdrstruct_s.hdf5", model, data, faults.output_mb)
    write_chemistry(out / "pdrchem_c.hdf5", data)
    (out / "pdrout.hdf").write_bytes(b"pdrflow stand-in: placeholder for KOSMA-tau's HDF4 output\n"
                                     + json.dumps(vars(model), sort_keys=True).encode() + b"\n")
    (out / "chemchk.out").write_text(
        "pdrflow stand-in chemistry check (NOT KOSMA-tau)\n"
        + "".join(f"{name:>8} {data[f'abundances/{name}'][-1]:.6e}\n" for name in ("H2", "CO", "C+", "C", "O"))
    )
    if int(config.get("radiative_transfer", {}).get("ifuvmeth", 0)) == 1:
        mcdrt = cwd / "Out"
        mcdrt.mkdir(exist_ok=True)
        (mcdrt / "mrt_summary.dat").write_text(f"stand-in MCDRT: surface FUV {model.sint:.6e}\n")
        (mcdrt / "fuv_field.dat").write_text(
            "".join(f"{a:.6e} {model.sint * math.exp(-1.8 * a):.6e}\n" for a in data["av"][::20]))
    (out / "CTRL_IND").write_text(f"{len(data['depth_cm'])} 1 0\n")
    print("PDR model finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
