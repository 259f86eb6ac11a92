"""Render a model's ``PDRNEW.INP`` and ``pdr_config.json`` (the KOSMA-tau input contract)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from .parameters import ELEMENTS, PARAMETERS, ParamValue

CHEM_RATES_LINK = "pdrinpdata/chem_rates.dat"

# PDRNEW.INP is read list-directed, one READ per line: a description line, then one value
# line per READ. Each block is (description, value lines); a value line lists parameter names
# joined by ", ". The order is fixed by the Fortran reader.
_PART_ONE: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("Total H particle density at cloud surface (in 1/cm**3):   XNSUR", (("xnsur",),)),
    ("Exponent of density-law:   ALPHA", (("alpha",),)),
    ("core radius (in times Radius):   RCORE", (("rcore",),)),
    ("Pseudo dust cross section (in cm**2):   SIGD", (("sigd",),)),
    ("Radius of the cloud (in cm):   RTOT", (("rtot",),)),
    ("Strength of radiation field:   SINT", (("sint",),)),
    ("Cosmic ray destruction rate (1/sec):   COSRAY", (("cosray",),)),
    ("Line (Doppler) width (in cm/sec):   BETA   (neg value enforces Larson 1981)", (("beta",),)),
    ("Metalicity :  ZMETAL", (("zmetal",),)),
)
_PART_ONE_REST: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("Preshielding factors for H2 and CO:   PRESHH2, PRESHCO", (("preshh2", "preshco"),)),
    ("Method of FUV radiative transfer and dust temperature [0=old, 1=mrt.exe]: IFUVMETH, IDUSTMET",
     (("ifuvmeth",), ("idustmet",))),
    ("Type of FUV field (0=none, 1=CMB, 2=Draine, 4=black-body, 5=file): IFUVTYPE FUVTEMP FUVSTRING",
     (("ifuvtype",), ("fuvtemp",), ("fuvstring",))),
    ("Rescale UMIST photorates [1=on, 0=off]: INEWGAM", (("inewgam",),)),
    ("Scattering treatment: ISCATTER", (("iscatter",),)),
    ("Calculate gas temperature [1=on, 0=off], if not, give Tgas: IHTCLGAS, TGAS", (("ihtclgas",), ("tgasc",))),
    ("Calculate dust temperature [1=on, 0=off], if not, give Tdust: IHTCLDUST, TDUST",
     (("ihtcldust",), ("tdustc",))),
    ("PE heating [0=BT94, 1=WD01]: IPEHMETH, INDXPEH", (("ipehmeth",), ("indxpeh",))),
    ("Include PAHs in PE heating [1=yes, 0=no]: IHTCLPAH", (("ihtclpah",),)),
    ("Dust composition and number of components: INDSTR, INDS, INDX", (("indstr",), ("inds",), ("indx",))),
    ("Dust-to-gas ratios: D2GRATIO1..10", (tuple(f"d2gratio{i}" for i in range(1, 11)),)),
    ("H2 formation method, H2 on PAHs, rate coefficient: IH2METH, IH2ONPAH, H2FORMC",
     (("ih2meth",), ("ih2onpah",), ("h2formc",))),
    ("H2 shielding treatment for chemistry (0=FGK, 1=DB96): IH2SHLD", (("ih2shld",),)),
    ("H2 level treatment: H2_STRUCTURE", (("h2_structure",),)),
    ("H2 ro-vib excitation, H-H2 collision rates: H2_H_COLL_RATES", (("h2_h_coll_rates",),)),
    ("H2 ro-vib excitation, reactive collisions [0=no, 1=yes]: H2_H_REACTIVE_COLLS", (("h2_h_reactive_colls",),)),
    ("H2 ro-vib collisions, g-bar approximation [0=no, 1=yes]: H2_USE_GBAR", (("h2_use_gbar",),)),
    ("H2 quadrupole transition A values: H2_QUAD_A", (("h2_quad_a",),)),
    ("IFH2DES: H2 formation induced desorption (0=no, 1=yes)", (("ifh2des",),)),
    ("IFCRDES: CR induced desorption (0=no, 1=yes)", (("ifcrdes",),)),
    ("IFPHDES: photo desorption (0=no, 1=yes)", (("ifphdes",),)),
    ("IFTHDES: thermal desorption (0=no, 1=yes)", (("ifthdes",),)),
    ("Number density of binding sites per grain surface (cm^-2): BINDSITES", (("bindsites",),)),
    ("Chemical heating in the energy balance [0=no, 1=yes]: IFCHEMHEAT", (("ifchemheat",),)),
    ("Alfven heating [0=no, 1=yes], alfven_velocity (cm/s), alfven_column (H2)",
     (("ifheat_alfven",), ("alfven_velocity",), ("alfven_column",))),
)
_PART_TWO: tuple[str, ...] = (
    "temp_start", "itmeth", "ichemeth", "inewtonstep", "omega_neg", "omega_pos", "lambda_newt",
    "use_conservation", "rescaleQF", "precondLR", "resortQF", "nconv_time", "time_dependent",
    "first_time_step_yrs", "max_time_yrs", "num_time_steps", "use_dlsodes", "use_dlsoda", "use_dvodpk",
    "rtol_chem", "atol_chem", "Xhtry", "rtol_iter", "Niter", "step1", "step2", "ihdfout", "dbglvl",
)


def fortran_number(value: ParamValue) -> str:
    """Format a value the way KOSMA-tau's list-directed reader accepts, at full precision.

    Integers plain; floats with |x| >= 1000 or < 0.1 in exponent form, others fixed. The
    digits are Python's shortest round-trip repr, so nothing is lost (the predecessor's
    ``%.3e`` truncated RTOT).
    """
    if isinstance(value, bool):
        raise TypeError("booleans are not KOSMA-tau values")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        raise ValueError(f"non-finite value {value!r}")
    if value == 0.0:
        return "0.0"
    if 0.1 <= abs(value) < 1000.0:
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    mantissa_digits = "".join(map(str, digits)) or "0"
    power = exponent + len(mantissa_digits) - 1  # type: ignore[operator]
    mantissa = mantissa_digits[0] + "." + (mantissa_digits[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}e{power:+03d}"


def render_pdrnew_inp(
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
    grid_comment: str | None = None,
) -> str:
    lines = ["", "                 INPUT-DATA for PDR program", "", "I. Physical input parameters", ""]

    def blocks(spec: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]) -> None:
        for description, value_lines in spec:
            lines.append(description)
            lines.extend(", ".join(fortran_number(params[name]) for name in names) for names in value_lines)

    blocks(_PART_ONE)
    lines.append("Abundances He,O,C,SI,C13 relative to total particle density: dummy values, overwritten by cards below")
    lines.append("0.0d0, 0.0d0, 0.0d0, 0.0d0, 0.0d0")
    blocks(_PART_ONE_REST)
    lines += ["", "II. Numerical input parameters", ""]
    for name in _PART_TWO:
        lines.append(name.upper())
        lines.append(fortran_number(params[name]))
    lines += ["*", "*"]
    if grid_comment:
        lines.append(f"*MODEL GRID {grid_comment}")
    lines += [
        "*** CHECKING THE STATISTICAL EQUILIBRIUM IN THE CHEMICAL NETWORK, LAST ITERATION:",
        "CHEMCHECK END   5",
        "*  LIST OF SPECIES (ELECTR, H, H2 ARE INCLUDED AUTOMATICALLY)",
    ]
    lines.extend(f"SPECIES  {species}" for species in network_species)
    lines += ["**", "**  ELEMENT ABUNDANCES"]
    for key, card, _ in ELEMENTS:
        if card is not None:
            lines.append(f"{card:<13}{fortran_number(float(elements[key]))}")
    return "\n".join(lines) + "\n"


def render_pdr_config_json(
    params: Mapping[str, ParamValue],
    network_species: Sequence[str],
    elements: Mapping[str, float],
) -> str:
    """Strict JSON (no comments, no NaN) grouped as KOSMA-tau's pdr_config.json."""
    doc: dict[str, object] = {}
    for parameter in PARAMETERS:
        if parameter.name.startswith("d2gratio"):
            continue
        doc.setdefault(parameter.group, {})[parameter.name] = params[parameter.name]  # type: ignore[index]
    dust = doc.setdefault("dust", {})
    dust["dust_to_gas_ratio"] = [params[f"d2gratio{i}"] for i in range(1, 11)]  # type: ignore[index]
    doc["species"] = list(network_species)
    doc["element_abundances"] = {key: float(elements[key]) for key, _, _ in ELEMENTS}
    doc["chemical_database_file"] = CHEM_RATES_LINK
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
