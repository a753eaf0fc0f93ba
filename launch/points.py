"""Rate points of a sweep: read from a config's `sweep(add)`, named, and turned into config flags.

A point is a flat dict of dotted config keys to values, e.g. {"lmbda": 0.1,
"reparam.conv_decoder": "scalar"}. Its workdir name lists the keys in sorted order
(`lmbda=0.1,reparam.conv_decoder=scalar`), so the same point always lands in the same directory,
whatever order `add` was called with.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import numbers
import os
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

Point = dict[str, Any]

MAX_NAME_CHARS = 150
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._+\-=]")


def split_config_arg(config_spec: str) -> tuple[str, str | None]:
    """'experiments/configs/x.py:ARG' -> ('experiments/configs/x.py', 'ARG'); no ':' -> (path, None)."""
    path, sep, arg = config_spec.partition(":")
    return path, (arg if sep else None)


def load_config_module(path: str) -> ModuleType:
    """Imports a config file by path (configs are files, not necessarily importable modules)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    name = "sweep_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collect_points(module: ModuleType, arg: str | None = None) -> list[Point]:
    """Calls the config's `sweep(add)` (or `sweep(add, arg)` when it takes an argument) and returns the points."""
    sweep = getattr(module, "sweep", None)
    if sweep is None:
        raise ValueError(f"{module.__file__} has no sweep(add) function listing the rate points")
    points: list[Point] = []

    def add(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        point = {**(overrides or {}), **kwargs}
        if not point:
            raise ValueError("add() needs at least one key=value")
        points.append(point)

    takes_arg = len(inspect.signature(sweep).parameters) >= 2
    if arg is not None and takes_arg:
        sweep(add, arg)
    else:
        sweep(add)
    if not points:
        raise ValueError(f"sweep() in {module.__file__} added no points")
    return points


def check_points(points: list[Point], config: Any) -> None:
    """Fails fast, before anything launches, on keys the config lacks or values of the wrong type."""
    for point in points:
        trial = copy.deepcopy(config)
        try:
            trial.update_from_flattened_dict(dict(point))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"sweep point {point} does not fit the config: {error}") from error


def format_flag_value(value: Any) -> str:
    """A value as `--config.key=VALUE` text that absl / ml_collections parse back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # shortest round-trip form: 0.1, 1e-05, inf
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return repr(tuple(format_literal(v) for v in value))
    raise TypeError(f"cannot pass {type(value).__name__} value {value!r} as a config flag; "
                    "use dotted keys for nested fields")


def format_literal(value: Any) -> Any:
    """Plain Python scalars for tuple elements (numpy scalars would print as np.float64(...))."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
    """{'lmbda': 0.1, 'reparam.conv_decoder': 'scalar'} -> ['--config.lmbda=0.1', '--config.reparam...']."""
    return [f"--config.{key}={format_flag_value(value)}" for key, value in sorted(overrides.items())]


def point_name(point: Mapping[str, Any]) -> str:
    """Deterministic directory name of a point: sorted `key=value` pairs joined by commas."""
    parts = [_UNSAFE_IN_NAME.sub("_", f"{key}={format_flag_value(value)}") for key, value in sorted(point.items())]
    name = ",".join(parts)
    if len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME_CHARS - 11]}-{digest}"
    return name


def parse_point_name(name: str) -> Point:
    """Best-effort inverse of `point_name` (values stay strings); {} when the name is not a point name."""
    point: Point = {}
    for part in name.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            return {}
        point[key] = value
    return point
