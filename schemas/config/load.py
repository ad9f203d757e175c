"""Loading a config from YAML: an unknown key is an error that names the key and the keys allowed at that place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from schemas.config.base import RENAMED_KEY, ConfigError, _Config
from schemas.config.run import RunConfig


def _allowed_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model that `loc` (minus the bad key) points into."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        else:
            break
    return sorted(current.model_fields)


def _format(err: ValidationError, model: type[BaseModel], origin: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == RENAMED_KEY:
            at = where + "." if where else ""
            lines.append(f"'{at}{e['ctx']['old']}' in {origin} is now called '{at}{e['ctx']['new']}': rename it")
        elif e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_at(model, e["loc"]))
            lines.append(f"unknown key '{where}' in {origin}; allowed here: {allowed}")
        else:
            lines.append(f"bad value for '{where}' in {origin}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, model: type[_Config] = RunConfig, origin: str = "config"):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, model, origin)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; a missing file, broken YAML (with line and column) or a top level
    that is not a mapping is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None, model: type[_Config] = RunConfig, overrides: dict[str, Any] | None = None,
                *, data: dict[str, Any] | None = None, origin: str = "defaults"):
    """Load a YAML config (or the defaults when path is None; or `data` already read from `origin`), then apply
    dotted overrides (to a copy: `data` is left as it was)."""
    import copy

    data = copy.deepcopy(data) if data is not None else {}
    if path is not None:
        data, origin = read_config_file(path), str(path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, model, origin)
