"""Incident memory: what earlier, closed incidents of the same alert on the same workload turned out to be."""

from __future__ import annotations

from pydantic import BaseModel, Field

from models.incident import PastIncident

__all__ = ["Memory", "MemoryRequest", "PastIncident"]


class MemoryRequest(BaseModel):
    alertname: str
    namespace: str
    service: str
    limit: int = 5


class Memory(BaseModel):
    incidents: list[PastIncident] = Field(default_factory=list)
    # Why nothing could be recalled (visibility unavailable, not supported by the server), when that is the case.
    unavailable: str | None = None
