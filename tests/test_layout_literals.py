"""Run-root names are spelled in schemas/layout.py only: no directory or file name of a run's root as a string
literal anywhere else in the packages (docstrings aside)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "mining", "store", "runtime", "stages", "trainer", "flows")
LAYOUT = ROOT / "schemas" / "layout.py"
FILE_NAME = re.compile(r"^\S*\.(parquet|json|jsonl|npy|tar|md|lock)$")
# the root's directory names, flagged where a path is built from them (a join, a `/`) or spelled with a '/'
DIRS = {"catalog", "parts", "quarantine", "embeddings", "clusters", "pairs", "batches", "instructed", "synth",
        "shards", "checkpoints", "exports", "metrics", "eval", "data", "data-counts", "models", "cache",
        "instructions", "corpus", "root"}
# (file, literal): names that are not of a run root
ALLOWED = {
    ("mining/maps/depth.py", "config.json"), ("mining/maps/depth.py", "preprocessor_config.json"),  # a model folder's files
    ("mining/models/vlm.py", "config.json"),  # a model folder's file
    ("mining/models/embedders.py", "open_clip_config.json"), ("mining/models/registry.py", "config.json"),
    ("trainer/components.py", "model_index.json"), ("trainer/ray_job.py", "model_index.json"),  # diffusers' index
    ("mining/faces/dlib_faces.py", "models"), ("mining/text/ocr.py", "models"),  # a package's bundled model folder
    ("store/sources.py", ".tar"), ("store/sources.py", ".parquet"),  # kinds of input source, not outputs
    ("stages/corpus/cluster.py", "a.npy"),  # a local scratch file in a fresh temporary folder
    ("flows/preflight.py", "model-digests.json"),  # the user's cache of model digests, not a run's
    ("mining/models/pull.py", "pulled.json"),  # the models directory's record of what pull placed
    ("mining/models/pull.py", "config.json"), ("mining/models/pull.py", "preprocessor_config.json"),  # a model's files
    ("mining/models/pull.py", "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"),
    ("mining/objects/detect.py", "config.json"), ("mining/objects/detect.py", "preprocessor_config.json"),
    ("mining/objects/detect.py", "tokenizer_config.json"), ("mining/objects/detect.py", "vocab.json"),
    ("mining/objects/detect.py", "special_tokens_map.json"),  # a transformers model folder's files
    ("flows/preflight.py", "config.json"),  # a model folder's file
    ("schemas/config/run.py", "models"),  # the models directory (./models, <user cache>/aceforge/models)
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body \
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant):
            out.add(id(n.body[0].value))
    return out


def _path_operands(tree: ast.AST) -> set[int]:
    """Nodes used as a part of a path: arguments of a join, operands of `/`."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) in ("join", "joinpath", "Path"):
            out.update(id(a) for a in n.args)
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            out.update((id(n.left), id(n.right)))
    return out


def run_root_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docs, operands = _docstrings(tree), _path_operands(tree)
    found = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Constant) or not isinstance(n.value, str) or id(n) in docs:
            continue
        s = n.value
        spelled = "/" in s and not re.search(r"\s", s) and any(p in DIRS for p in s.split("/"))
        if FILE_NAME.match(s) or spelled or (id(n) in operands and s in DIRS):
            found.append((n.lineno, s))
    return found


def test_no_run_root_name_outside_the_layout_module():
    bad = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f == LAYOUT:
                continue
            rel = f.relative_to(ROOT).as_posix()
            bad += [f"{rel}:{line}: {s!r}" for line, s in run_root_literals(f) if (rel, s) not in ALLOWED]
    assert not bad, "run-root names belong in schemas/layout.py:\n" + "\n".join(sorted(bad))


def test_the_scan_finds_what_it_is_meant_to(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('"""Docs may say <root>/shards/x/manifest.parquet."""\n'
                   'a = join(root, "shards", name)\n'
                   'b = f"{root}/checkpoints/{run}"\n'
                   'c = Path(d) / "metrics.jsonl"\n'
                   'd = {"shards": 1, "pairs": 2}  # count keys, not paths\n'
                   'e = "a sentence about pairs.parquet"\n')
    assert [s for _, s in run_root_literals(src)] == ["shards", "/checkpoints/", "metrics.jsonl"]


def test_the_allowlist_holds_only_literals_that_exist():
    present = {(f.relative_to(ROOT).as_posix(), s) for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")
               for _, s in run_root_literals(f)}
    assert ALLOWED <= present, sorted(ALLOWED - present)
