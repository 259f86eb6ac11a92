"""The pdrflow page's HTTP routes, in the form ``distributed.scheduler.http.routes`` modules take.

distributed puts each path below the dashboard's prefix (``--dashboard-prefix``) and hands every
handler the scheduler (``dask_server``).
"""

from __future__ import annotations

from typing import Any

from tornado import web

from .plugin import PAGE, DataHandler, PageHandler

routes: list[tuple[str, type[web.RequestHandler], dict[str, Any]]] = [
    (PAGE, PageHandler, {}),
    (f"{PAGE}/", web.RedirectHandler, {"url": f"../{PAGE}"}),  # the page's relative links need no slash
    (rf"{PAGE}/data\.json", DataHandler, {}),
]
