import pytest


@pytest.mark.slow
def test_ray_is_stopped_only_by_whoever_started_it():
    import ray

    from tasks.ray_pool import ensure_ray, stop_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray()
    assert ray.is_initialized()
    stop_ray()
    assert not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # someone else's Ray
    try:
        ensure_ray()
        stop_ray()
        assert ray.is_initialized()
    finally:
        ray.shutdown()
