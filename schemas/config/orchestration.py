"""How the flows submit work."""

from __future__ import annotations

from pydantic import Field

from schemas.config.base import _Config


class OrchestrationConfig(_Config):
    renamed = {"units_in_flight": "items_in_flight"}

    items_in_flight: int = Field(4, ge=1, description="work items (one Prefect task run each) submitted at once "
                                 "per stage (bounds threads and memory in the flow process)")
    embed_actors: int = Field(2, ge=1, description="embedder actors on Ray (each loads its model once)")
