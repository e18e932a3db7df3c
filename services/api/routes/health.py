"""``/healthz`` and ``/readyz`` (the checks are the API context's ``readiness``: the database, the
bus, and whatever else is added there). Served under the URL prefix like every route, and at the
root too, where orchestrators' probes look without knowing the prefix."""

from __future__ import annotations

from envstore.api.routes.paths import Routes
from envstore.common.http_telemetry import TELEMETRY


def register(routes: Routes) -> None:
    readiness = routes.app[TELEMETRY].readiness
    routes.add("GET", "/healthz", readiness.handle_healthz, "Liveness: 200 while the process serves")
    routes.add(
        "GET",
        "/readyz",
        readiness.handle_readyz,
        "Readiness: 200 when the database and the event bus answer, else 503 with the reasons",
        responses=(200, 503),
    )
    if routes.prefix:
        readiness.add_routes(routes.app.router)
