import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random FLUX.1-Fill pipeline saved in diffusers' layout, and the pipeline itself."""
    from trainer.components import build_tiny_pipeline, save_pipeline

    pipe = build_tiny_pipeline(seed=0)
    folder = save_pipeline(pipe, tmp_path_factory.mktemp("base") / "tiny-flux-fill")
    return folder, pipe
