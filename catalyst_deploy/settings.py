"""The machinery of the settings layer: declaring a setting (`setting`), building a settings dataclass from
loose values (recipe YAML, CLI text, Python values) with every type, range and finiteness check in one place
(`build`), and reading a default for help text (`default_text`). Imports nothing heavy."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path

from catalyst_deploy.errors import UsageError, did_you_mean

FLOAT32_MAX = 3.4028234663852886e38
# bounds of the benchmark's settings, so that no value asks for unbounded work (bench.harness holds to them too)
MAX_BENCH_BATCH = 65536
MAX_BENCH_SECONDS = 3600.0
MAX_BENCH_RUNS = 1_000_000


def setting(default, help: str = "", *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, factory=None):
    """A dataclass field with its help text and the range or choices `validate` enforces."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def build(cls, values: dict, prefix: str = ""):
    """`cls(**values)` after coercing each value to its field's type; UsageError naming a bad setting."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        name = unknown[0]
        hint = did_you_mean(name, fields) if isinstance(name, str) else ""
        raise UsageError(f"unknown setting {prefix}{shown(name)}{hint}")
    coerced = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(value):
            coerced[name] = value
            continue
        coerced[name] = _coerce(value, hints[name], prefix + name)
        _check_range(coerced[name], fields[name].metadata, prefix + name)
    return cls(**coerced)


def _coerce(value, hint, name: str):
    """`value` as the type `hint` asks for (str -> number, "a,b" -> tuple...); UsageError when it is not one."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise UsageError(f"setting {name} cannot be empty")
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    origin = typing.get_origin(base)
    try:
        if origin is tuple:
            item = typing.get_args(base)[0]
            parts = [p for p in value.split(",") if p] if isinstance(value, str) else list(value)
            return tuple(_coerce(p, item, name) for p in parts)
        if base is bool:
            return _as_bool(value, name)
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                raise UsageError(f"setting {name} must be a finite number (training runs in float32: at most "
                                 f"{FLOAT32_MAX:.3g} in size), got {shown(value)}")
            return number
        if base is Path:
            return Path(value)
        if base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"setting {name} must be {_type_name(base)}, got {shown(value)}") from None
    return value


def shown(value, limit: int = 60) -> str:
    """A value for an error message, bounded in size whatever it is (a recipe's YAML aliases can make a
    small file stand for a structure with billions of items: repr would never end)."""
    import reprlib

    text = reprlib.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"setting {name} must be true or false, got {shown(value)}")


def _type_name(base) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path"}.get(
        base, "a comma-separated list" if typing.get_origin(base) is tuple else str(base))


def _check_range(value, meta, name: str) -> None:
    if value is None or not meta:
        return
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if meta.get("choices") and v not in meta["choices"]:
            raise UsageError(f"setting {name} must be one of {', '.join(meta['choices'])}, got {shown(v)}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
            raise UsageError(f"setting {name} must be {'>' if meta.get('lo_open') else '>='} {lo:g}, got {shown(v)}")
        if hi is not None and (v > hi or (meta.get("hi_open") and v == hi)):
            raise UsageError(f"setting {name} must be {'<' if meta.get('hi_open') else '<='} {hi:g}, got {shown(v)}")


def default_text(name: str, cls) -> str:
    """A setting's default as the CLI help shows it, read from the dataclass (defaults live here once)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)
