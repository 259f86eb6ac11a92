* pdrflow stand-in onion input -- NOT a KOSMA-tau ONION3.INP (read only by pdrflow's stand-in onionexe)
* SPECIES <name>: the species whose abundance profile (pdrstruct_s.hdf5 /abundances/<name>) emits
* LINE <transition> <wavelength_um> <E_up_K> <n_crit_cm-3> <N_tau1_cm-2>
*   E_up: upper level energy; n_crit: critical density; N_tau1: column giving line-centre
*   optical depth 1 for a 1 km/s wide line (approximate values, good enough for a stand-in)
SPECIES C
LINE CI_609um             609.140    23.62  5.0e+02  5.0e+17
LINE CI_370um             370.420    62.46  3.0e+03  1.0e+18
