"""The layering rule of the README: each package imports only the packages below it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"schemas": set(), "mining": {"schemas"}, "tasks": {"mining", "schemas"},
           "trainer": {"schemas"}, "flows": {"tasks", "schemas", "trainer", "mining"}}


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
