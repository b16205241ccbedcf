"""The gateway's ops endpoint: ``/metrics``, ``/healthz``, ``/readyz`` on FLEET_METRICS_PORT,
like every fleet process (``fleet_shared.ops_http``).

The gateway is not a ``FleetService`` (it consumes no stream), so it wires the shared
parts itself: its own ``FleetMetrics`` with the health board it follows as a scrape-time
source, ready while connected to NATS. Its API port keeps its own ``/healthz`` (JSON, for
clients of the API); this one is for probes and Prometheus.
"""

from __future__ import annotations

from fleet_gateway.fleet import FleetLink
from fleet_shared.config import Settings
from fleet_shared.metrics import FleetMetrics
from fleet_shared.metrics_sources import health_source
from fleet_shared.ops_http import OpsServer


def gateway_metrics(settings: Settings, fleet: FleetLink) -> FleetMetrics:
    """The gateway's metrics: the catalogue, with the health board read at scrape time."""
    registry = settings.registry()
    metrics = FleetMetrics(registry, subjects=fleet.subjects)
    if fleet.board is not None:
        metrics.add_source("health_board", health_source(metrics, fleet.board, list(registry.models)))
    return metrics


async def serve_ops(settings: Settings, fleet: FleetLink) -> OpsServer | None:
    """Start the endpoint (None when FLEET_METRICS_PORT is 0); the caller stops it."""
    if settings.metrics_port <= 0:
        return None

    async def nats_connected() -> bool:
        return fleet.connected

    server = OpsServer(gateway_metrics(settings, fleet), checks={"nats": nats_connected}, port=settings.metrics_port)
    await server.start()
    return server
