"""GET /api/health (no auth, no secrets) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from strongroom.web.api.schemas import HealthReport
from strongroom.web.context import context_of
from strongroom.web.status import health_report, metrics_text

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/health")
def health(request: Request) -> HealthReport:
    """healthy, warning or critical per target (``strongroom health``); always 200, read
    ``status``. Names targets and times only: no URLs, hosts or secrets."""
    return HealthReport.model_validate(health_report(context_of(request)))


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
)
def metrics(request: Request) -> Response:
    """The gauges of ``--metrics-file``, per target, in the Prometheus text format."""
    return Response(
        metrics_text(context_of(request)), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
