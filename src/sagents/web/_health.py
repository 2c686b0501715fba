"""Health probes: ``/health/alive`` and ``/health/ready``.

*Alive* answers as long as the process serves requests (a failing liveness probe means "restart
me"). *Ready* means "send me traffic": the runtime is started and can host agents, and no
shutdown has begun — on SIGTERM readiness flips first, so a load balancer stops routing here
before the agents are drained and stopped.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

__all__ = ["router"]

router = APIRouter(prefix="/health")


@router.get("/alive")
async def alive() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    services = request.app.state.services
    if services.ready():
        return JSONResponse({"status": "ready", "agents": services.runtime.agent_count()})
    reason = "draining" if services.draining else "starting"
    return JSONResponse({"status": reason}, status_code=503)
