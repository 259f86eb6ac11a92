* pdrflow stand-in onion input -- NOT a KOSMA-tau ONION3.INP
SPECIES C
LINE CI_609um 609.135
LINE CI_370um 370.415
