"""What one worker of a stage holds on a Ray node: stages declare it, model wrappers supply theirs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True)  # declared once as class attributes and shared

    cpus: float = Field(1.0, ge=0, description="CPUs one worker of the stage holds")
    gpus: float = Field(0.0, ge=0, description="GPUs one worker holds (model stages on GPU nodes)")
    memory_mb: int = Field(0, ge=0, description="memory one worker reserves on Ray; 0: no reservation")
