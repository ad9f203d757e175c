"""The layering rule of the README: each package imports only the packages below it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"schemas": set(), "mining": {"schemas"}, "store": {"schemas", "mining"},
           "runtime": {"schemas", "mining", "store"}, "stages": {"schemas", "mining", "store", "runtime"},
           "trainer": {"schemas"}, "flows": {"schemas", "mining", "store", "runtime", "stages", "trainer"}}


def _ours(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
    return out & set(ALLOWED)


def test_each_package_imports_only_the_layers_below_it():
    bad = []
    for pkg, allowed in ALLOWED.items():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            extra = _ours(f) - allowed - {pkg}
            if extra:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, bad


_PARQUET_READERS = {"read_table", "ParquetFile", "read_metadata", "read_schema", "read_pandas"}


def _file_objects_passed_to_pyarrow(path: Path) -> list[str]:
    """Calls like `pq.read_table(f)` where `f` is bound by `with <...>open(...) as f`: pyarrow then frees a
    Python file object from its own thread pool, which at interpreter exit aborted `aceforge ingest` with
    exit 134 ("terminate called without an active exception") about one run in five."""
    bad = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.With):
            continue
        opened = {item.optional_vars.id for item in node.items
                  if isinstance(item.optional_vars, ast.Name) and isinstance(item.context_expr, ast.Call)
                  and getattr(item.context_expr.func, "attr", getattr(item.context_expr.func, "id", "")) == "open"}
        for call in ast.walk(node):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in _PARQUET_READERS and call.args
                    and isinstance(call.args[0], ast.Name) and call.args[0].id in opened):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {call.func.attr}({call.args[0].id})")
    return bad


def test_parquet_is_never_read_from_a_python_file_object():
    bad = [b for pkg in ALLOWED for f in sorted((ROOT / pkg).rglob("*.py")) for b in _file_objects_passed_to_pyarrow(f)]
    assert not bad, bad


def test_no_script_shadows_a_package():
    """A script run as `python bench/x.py` has bench/ first on sys.path: a bench/stages.py there would hide the
    stages package from every import in the script."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert {"stages", "store", "runtime", "mining"} <= packages
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert scripts and not scripts & packages
