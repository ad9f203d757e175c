"""Pages generated at build time from the code, so they cannot drift from it.

reference/config.md: every configuration key from the pydantic models' fields (type, default, description).
reference/layout.md: every path of a run root from the layout module's own methods.
"""

from __future__ import annotations

import inspect
import json
import typing

from mkdocs.structure.files import File
from pydantic import BaseModel


def _type(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("|", "\\|")


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    try:
        text = json.dumps(value, default=str)
    except TypeError:
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "`" + text.replace("|", "\\|") + "`"


def _section_model(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def config_reference() -> str:
    from schemas.config import RunConfig

    out = ["# Configuration reference", "",
           "Generated from the field descriptions of the models in `schemas/config/` when the docs are built. "
           "Every key is optional; YAML sections nest as shown by the dotted names. "
           "An unknown key is an error that names it and the keys allowed there.", ""]

    def walk(model: type[BaseModel], path: str) -> None:
        rows, subs = [], []
        for name, field in model.model_fields.items():
            sub = _section_model(field.annotation)
            if sub is not None:
                subs.append((f"{path}.{name}" if path else name, sub))
                continue
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
            rows.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {desc} |")
        if rows:
            out.extend([f"## `{path or 'top level'}`", ""])
            doc = model.__dict__.get("__doc__")
            if doc and path:
                out.extend([inspect.cleandoc(doc).split("\n\n")[0], ""])
            out.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for sub_path, sub in subs:
            walk(sub, sub_path)

    walk(RunConfig, "")
    return "\n".join(out) + "\n"


def _example_args(fn, bound: bool = True) -> list:
    args = []
    for p in list(inspect.signature(fn).parameters.values())[1 if bound else 0:]:
        hint = typing.get_type_hints(fn).get(p.name)
        args.append(0 if hint is int else p.name.upper())
    return args


def _layout_rows(cls, obj) -> list[str]:
    """One row per path-giving member of a layout class: its name, an example path, its docstring's first line."""
    rows = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or name in getattr(cls, "__dataclass_fields__", {}) or name in ("marker", "where"):
            continue
        static = isinstance(inspect.getattr_static(cls, name), staticmethod)
        if isinstance(member, property):
            path, doc = getattr(obj, name), inspect.getdoc(member.fget) or ""
        elif inspect.isfunction(member):
            path, doc = getattr(obj, name)(*_example_args(member, bound=not static)), inspect.getdoc(member) or ""
        else:
            continue
        rows.append(f"| `{name}` | `{path}` | {doc.splitlines()[0] if doc else ''} |")
    return rows


def layout_reference() -> str:
    from schemas import layout as layout_module
    from schemas.layout import FILE_SETS, RunLayout

    out = ["# Run-root layout reference", "",
           "Generated from `schemas/layout.py` when the docs are built: every path of a run's root, as the "
           "layout module spells it (integers shown as 0, names in capitals).", "",
           "```", (inspect.getdoc(layout_module) or "").strip(), "```", "",
           "## `RunLayout`", "", "| name | path | what |", "|---|---|---|"]
    lay = RunLayout("<root>")
    out += _layout_rows(RunLayout, lay)
    for cls in FILE_SETS:
        where = getattr(lay, cls.where) if cls.where else "<out>"
        if callable(where):
            where = where(*_example_args(where, bound=False))
        out += ["", f"## `{cls.__name__}`", "", (inspect.getdoc(cls) or "").splitlines()[0], "",
                "| name | path | what |", "|---|---|---|", *_layout_rows(cls, cls(where))]
    return "\n".join(out) + "\n"


def on_files(files, config):
    for uri, text in (("reference/config.md", config_reference()), ("reference/layout.md", layout_reference())):
        files.append(File.generated(config, uri, content=text))
    return files
