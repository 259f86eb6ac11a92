"""The KOSMA-tau input parameters: names, types, defaults and where each goes.

Where each value goes in ``PDRNEW.INP`` and ``pdr_config.json`` is the business of the templates
(``kosma/shipped_templates/``); this table names the parameters, their types and defaults. Defaults are
the values KOSMA-tau users got from the predecessor tool, so that an unchanged config reproduces
their models (tests check them against the predecessor's rendered files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ParamValue = int | float | str


@dataclass(frozen=True)
class Parameter:
    name: str  # key in the config and in pdr_config.json
    kind: type  # int, float or str
    default: ParamValue | None  # None: set by a grid axis


def _p(name: str, kind: type, default: ParamValue | None) -> Parameter:
    return Parameter(name, kind, default)


# Set per model from the grid axes, never given as a fixed parameter.
AXIS_PARAMETERS: Final = ("xnsur", "sint", "zmetal", "rtot")

PARAMETERS: Final[tuple[Parameter, ...]] = (
    _p("xnsur", float, None),
    _p("alpha", float, 1.5),
    _p("rcore", float, 0.2),
    _p("sigd", float, 1.9e-21),
    _p("rtot", float, None),
    _p("sint", float, None),
    _p("cosray", float, 2.0e-16),
    _p("beta", float, -1.0),
    _p("zmetal", float, None),
    _p("preshh2", float, 0.0),
    _p("preshco", float, 0.0),
    _p("ifuvmeth", int, 1),
    _p("idustmet", int, 1),
    _p("iscatter", int, -1),
    _p("ifuvtype", int, 2),
    _p("fuvtemp", float, 2.0e4),
    _p("fuvstring", str, "Lyalpha.fuv"),
    _p("inewgam", int, 0),
    _p("ihtclgas", int, 1),
    _p("tgasc", float, 50.0),
    _p("ihtcldust", int, 1),
    _p("tdustc", float, 20.0),
    _p("ipehmeth", int, 1),
    _p("indxpeh", int, 4),
    _p("ihtclpah", int, 1),
    _p("indstr", int, 1),
    _p("inds", int, 4),
    _p("indx", int, 7),
    *(
        _p(f"d2gratio{i}", float, value)
        for i, value in enumerate(
            (8.27485e-3, 2.27746e-3, 3.75578e-4, 3.75578e-4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), start=1
        )
    ),
    _p("ih2meth", int, 1),
    _p("ih2onpah", int, 0),
    _p("h2formc", float, 2.121e-17),
    _p("ih2shld", int, 0),
    _p("h2_structure", int, 0),
    _p("h2_h_coll_rates", int, 3),
    _p("h2_h_reactive_colls", int, 1),
    _p("h2_use_gbar", int, 1),
    _p("h2_quad_a", int, 1),
    _p("ifh2des", int, 1),
    _p("ifcrdes", int, 2),
    _p("ifphdes", int, 1),
    _p("ifthdes", int, 1),
    _p("bindsites", float, 1.5e15),
    _p("ifchemheat", int, 0),
    _p("ifheat_alfven", int, 0),
    _p("alfven_velocity", float, 3.3e5),
    _p("alfven_column", float, 4.0e20),
    _p("temp_start", float, 0.0),
    _p("itmeth", int, 2),
    _p("ichemeth", int, 0),
    _p("inewtonstep", int, 1),
    _p("omega_neg", float, 5.0),
    _p("omega_pos", float, 2.0),
    _p("lambda_newt", float, 0.5),
    _p("use_conservation", int, 1),
    _p("rescaleQF", int, 0),
    _p("precondLR", int, 0),
    _p("resortQF", int, 0),
    _p("nconv_time", int, 0),
    _p("time_dependent", int, 0),
    _p("first_time_step_yrs", float, 1e-10),
    _p("max_time_yrs", float, 1e7),
    _p("num_time_steps", int, 0),
    _p("use_dlsodes", int, 1),
    _p("use_dlsoda", int, 0),
    _p("use_dvodpk", int, 0),
    _p("rtol_chem", float, 1e-2),
    _p("atol_chem", float, 1e-10),
    _p("Xhtry", float, 1e6),
    _p("rtol_iter", float, 3e-2),
    _p("Niter", int, 60),
    _p("step1", float, 100.0),  # REAL in KOSMA-tau (ZTOT/STEP1)
    _p("step2", float, 200.0),
    _p("ihdfout", int, 4),
    _p("dbglvl", int, 0),
)

PARAMETERS_BY_NAME: Final = {p.name: p for p in PARAMETERS}

# Element fractions relative to H nuclei: (pdr_config.json key, PDRNEW.INP card or None).
ELEMENTS: Final[tuple[tuple[str, str | None, float], ...]] = (
    ("He", "HELIUM", 8.51e-2),
    ("C", "CARBON", 2.34e-4),
    ("13C", "13CARBON", 3.52e-6),
    ("N", "NITROGEN", 8.32e-5),
    ("O", "OXYGEN", 4.47e-4),
    ("18O", "18OXYGEN", 8.93e-7),
    ("F", "FLUORINE", 6.68e-9),
    ("Ne", None, 6.9e-5),
    ("Na", "SODIUM", 2.0e-7),
    ("Mg", "MAGNESIUM", 3.2e-6),
    ("Al", None, 2.8e-6),
    ("Si", "SILICON", 3.17e-6),
    ("P", "PHOSPHORUS", 1.17e-7),
    ("S", "SULFUR", 7.41e-6),
    ("Cl", "CHLORINE", 1.0e-7),
    ("K", None, 1.35e-7),
    ("Ar", None, 3.29e-6),
    ("Ca", None, 2.2e-6),
    ("Fe", "IRON", 1.0e-6),
)
ELEMENT_DEFAULTS: Final = {key: value for key, _, value in ELEMENTS}
# Mass number of each element: templates name an abundance KT_VARelfrac<A>_ (elfrac12 = carbon),
# as the predecessor's database columns do.
ELEMENT_MASS_NUMBERS: Final = {
    "He": 4, "C": 12, "13C": 13, "N": 14, "O": 16, "18O": 18, "F": 19, "Ne": 20, "Na": 23, "Mg": 24, "Al": 27,
    "Si": 28, "P": 31, "S": 32, "Cl": 35, "K": 39, "Ar": 40, "Ca": 41, "Fe": 56,
}

DEFAULT_ONION_SPECIES: Final = ("CO", "C+", "C", "O", "13C+", "13C", "13CO", "OH", "CH+", "HCO+", "H13CO+")
# The predecessor's network (gas phase, then ices as J...), in its order: the order matters to the
# chemistry code, and 105 species is what existing grids were computed with.
DEFAULT_NETWORK_SPECIES: Final = (
    "HE+", "HE", "H+", "H2+", "H3+", "C", "CH", "C+", "CH+", "CH2+", "CH2", "CH3+", "CH3", "CH4+", "CH4", "CH5+",
    "CN", "CN+", "HCN", "HCN+", "CO", "CO+", "HCO+", "HCO", "CO2", "CO2+", "H2CO", "H2CO+", "13C", "13CH", "13CO",
    "13C+", "13CH+", "13CH2+", "13CO+", "H13CO+", "N", "N2", "N2+", "N2H+", "NO", "NO+", "O", "O+", "OH", "OH+",
    "H2O", "H2O+", "H3O+", "O2", "O2+", "18O", "C18O", "13C18O", "O18O", "O18O+", "18OH", "18OH+", "H218O",
    "H218O+", "H318O+", "SO", "SO+", "SO2", "SO2+", "HSO2+", "S", "S+", "SI", "SI+", "SIH", "SIH+", "SIH2+", "SIO",
    "SIO+", "SIOH+", "CH3OH+", "CH3O", "CH3OH", "H2O2", "JH", "JC", "JCH", "JCH2", "JCH3", "JCH4", "JCN", "JHCN",
    "JCO", "JHCO", "JCO2", "JH2CO", "JCH3O", "JCH3OH", "JN", "JN2", "JNO", "JO", "JOH", "JH2O", "JH2O2", "JO2",
    "JSO", "JSO2", "JS",
)


def clump_radius_cm(density: float, mass_msun: float, alpha: float, rcore: float) -> float:
    """RTOT of a clump of surface density n and mass M with the KOSMA-tau density law."""
    import math

    d = (4.0 * math.pi / 3.0) * density * (3.0 - alpha * rcore ** (3.0 - alpha)) / (3.0 - alpha)
    return 1.05916e19 * (mass_msun / d) ** (1.0 / 3.0)
