"""The base of every model wrapper in mining/: a cheap `__init__` (configuration only), `setup()` loads the
weights once per worker (and again is a no-op), `__call__` works on an image or a batch, and `resources()`
says what one worker running the model holds (a stage's `worker_resources()` asks its model for it)."""

from __future__ import annotations

from typing import ClassVar

from schemas.resources import Resources


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class ModelWrapper:
    RESOURCES: ClassVar[Resources] = Resources(cpus=1.0)  # one worker, where no GPU is visible
    GPU_RESOURCES: ClassVar[Resources | None] = None  # one worker on a GPU node; None: RESOURCES there too

    def resources(self) -> Resources:
        if self.GPU_RESOURCES is not None and cuda_available():
            return self.GPU_RESOURCES
        return self.RESOURCES

    def setup(self) -> None:
        """Load what every call needs: once per worker; a second call does nothing."""
