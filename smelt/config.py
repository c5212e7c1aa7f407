"""One config system for every stage: typed dataclasses, TOML recipes, `--section.key value` overrides.

Every field carries a one-line doc in its metadata (`smelt <verb> --help` prints them), and every config
class validates itself, raising `ConfigError` that names the offending field (and the file, if it came from one).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """Bad user input in a config file, an override or a preset name. The message names the field."""


def doc(default: Any, text: str, **kw: Any) -> Any:
    """A dataclass field with a default and a one-line doc (mutable defaults go through default_factory)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": text}, **kw)
    if is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata={"doc": text}, **kw)
    return field(default=default, metadata={"doc": text}, **kw)


def check(ok: bool, name: str, msg: str) -> None:
    """Raise ConfigError naming `name` unless `ok`."""
    if not ok:
        raise ConfigError(f"{name}: {msg}")


T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a TOML value or a CLI string to the annotated type `tp`, or raise ConfigError naming the field."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}: cannot read {value!r} as {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""] if not value.startswith("[") else json.loads(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, name) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:  # allow 1e4-style integers
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=name + ".")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from a (nested) dict, starting from `base` or the defaults. Unknown keys are errors."""
    hints = _field_types(cls)
    names = {f.name for f in fields(cls) if f.init}
    obj = base if base is not None else cls()
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown field; known fields of [{prefix.rstrip('.') or cls.__name__}] "
                              f"are {sorted(names)}")
        tp = hints[key]
        if is_dataclass(tp) and isinstance(value, dict):
            kwargs[key] = from_dict(tp, value, prefix=f"{prefix}{key}.", base=getattr(obj, key))
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return dataclasses.replace(obj, **kwargs)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn `--a.b value` / `--a.b=value` pairs into a nested dict of strings (coerced later by type)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"override {arg!r}: expected --section.key value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key}: missing a value")
            value = args[i + 1]
            i += 1
        i += 1
        node = out
        parts = key.replace("-", "_").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override --{key}: {p} is not a section")
        node[parts[-1]] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: T | None = None) -> T:
    """Defaults (or `base`) ← TOML file ← CLI overrides, then `validate()`. Errors name the field and the file."""
    cfg = base if base is not None else cls()
    if path is not None:
        try:
            cfg = from_dict(cls, load_toml(path), base=cfg)
        except ConfigError as e:
            if str(e).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        cfg = from_dict(cls, parse_overrides(overrides), base=cfg)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(cfg: Any) -> str:
    """Serialise a (nested) dataclass config to TOML; None values are omitted (TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            tables.append((f.name, v))
        elif v is not None:
            lines.append(f"{f.name} = {_toml_value(v)}")
    for name, sub in tables:
        lines.append(f"\n[{name}]")
        for f in fields(sub):
            v = getattr(sub, f.name)
            if v is not None:
                lines.append(f"{f.name} = {_toml_value(v)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def describe(cls: type, prefix: str = "") -> list[str]:
    """Help lines `--section.key (type, default): doc` for every field, recursively."""
    out = []
    hints = _field_types(cls)
    inst = cls()
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out.extend(describe(tp, prefix + f.name + "."))
            continue
        tname = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        out.append(f"  --{prefix}{f.name} ({tname}, default {getattr(inst, f.name)!r}): {f.metadata.get('doc', '')}")
    return out
