from runtime.cache import OutputsExist


class _Ctx:
    """Enough of a task-run context for the inner policy (inputs + task source)."""

    class task:  # noqa: N801
        @staticmethod
        def fn(x):
            return x


def test_no_key_until_every_output_exists_then_inputs_decide(tmp_path):
    out = tmp_path / "out" / "_SUCCESS.json"
    policy = OutputsExist(outputs=lambda i: [str(out)])
    assert policy.compute_key(_Ctx, {"x": 1}, {}) is None  # not done: run it
    out.parent.mkdir()
    out.write_text("{}")
    k1 = policy.compute_key(_Ctx, {"x": 1}, {})
    assert k1 is not None and k1 == policy.compute_key(_Ctx, {"x": 1}, {})
    assert policy.compute_key(_Ctx, {"x": 2}, {}) != k1
    out.unlink()
    assert policy.compute_key(_Ctx, {"x": 1}, {}) is None  # output gone: never a stale cached result
    broken = OutputsExist(outputs=lambda i: [i["missing"]])
    assert broken.compute_key(_Ctx, {"x": 1}, {}) is None
