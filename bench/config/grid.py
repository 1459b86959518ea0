"""The ``grid:`` block of an ablation file: sweeps without copy-paste.

    grid:
      loss.kl.weight: [0.1, 0.3, 1, 3]     # loss.<term>.<argument>  (the term must be in the arm's loss)
      train.lr: [1.0e-3, 3.0e-3]           # train.<key> | model.<key> | eval.<key>
    arms:
      mse: {}
      ssim: {loss: [{name: kl}, {name: ssim}]}

expands, before validation, to every named arm x every combination of the grid values (file order),
named ``<arm>--<key>_<value>[--...]`` (e.g. ``ssim--loss.kl.weight_0.3--train.lr_0.003``) and carrying the
values it sweeps in ``swept`` ({key: value}), which tables and claims read instead of parsing names.
An arm that already sets a swept key is refused (the grid would silently overwrite it); so is a
``loss.<term>`` key whose term the arm's loss does not contain.  A ``baseline:`` naming a named arm
means its first grid combination.  Errors point at the grid line (``grid.<key>``).

An arm may replace the values of a file-level grid key with its own (``arms.<arm>.grid``), e.g. to
spend a rate–distortion sweep where each loss's rate range lies::

    grid:
      loss.kl.weight: [0.1, 1]
    arms:
      mse: {grid: {loss.kl.weight: [0.01, 0.03, 0.1]}}
      ssim: {loss: [{name: kl}, {name: ssim}], grid: {loss.kl.weight: [1, 3, 10]}}

Its keys must be keys of the file's grid (so every arm is still named by the same keys).
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from typing import Any

from bench.errors import ConfigError

SECTIONS = ("loss", "train", "model", "eval")
SEP, EQ = "--", "_"        # arm names allow letters, digits, '_', '.', '-'

Blame = Callable[[str, tuple], ConfigError]     # (message, key path) -> the error to raise


def label(value: Any) -> str:
    """A short, filesystem-safe rendering of a swept value for arm names (0.001 -> 0.001, 1e-05 -> 1e-05)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(label(v) for v in value)
    return str(value)


def _check(grid: Any, blame: Blame, where: tuple = ("grid",)) -> list[tuple[str, list[Any]]]:
    if not isinstance(grid, dict) or not grid:
        raise blame("must map dotted keys to lists of values, e.g. {train.lr: [0.001, 0.003]}", where)
    items = []
    for key, values in grid.items():
        parts = str(key).split(".")
        if parts[0] not in SECTIONS or len(parts) < 2 or (parts[0] == "loss" and len(parts) != 3):
            raise blame(f"unknown grid key {key!r}: use loss.<term>.<argument> or "
                        f"{' | '.join(s + '.<key>' for s in SECTIONS[1:])}", (*where, key))
        if not isinstance(values, list) or not values:
            raise blame("must be a non-empty list of values", (*where, key))
        for v in values:
            if isinstance(v, dict) or (isinstance(v, float) and not math.isfinite(v)) or v is None:
                raise blame(f"grid values must be finite numbers, strings, booleans or lists (got {v!r})",
                            (*where, key))
        if len({repr(v) for v in values}) != len(values):
            raise blame("lists a value twice", (*where, key))
        items.append((str(key), values))
    return items


def _apply(arm: dict, key: str, value: Any, default_loss: list, arm_name: str, blame: Blame) -> None:
    section, *rest = key.split(".")
    if section == "loss":
        term, arg = rest
        loss = copy.deepcopy(arm["loss"] if arm.get("loss") is not None else default_loss)
        hits = [e for e in loss if isinstance(e, dict) and e.get("name") == term]
        if not hits:
            raise blame(f"arm {arm_name!r} has no loss term {term!r} to sweep", ("grid", key))
        if arm.get("loss") is not None and any(arg in e for e in hits):
            raise blame(f"arm {arm_name!r} already sets loss {term}.{arg}; remove it or the grid key", ("grid", key))
        for e in hits:
            e[arg] = value
        arm["loss"] = loss
        return
    cur = arm.setdefault(section, {})
    for p in rest[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise blame(f"arm {arm_name!r}: {section}.{p} is not a mapping", ("grid", key))
    if rest[-1] in cur:
        raise blame(f"arm {arm_name!r} already sets {key}; remove it or the grid key", ("grid", key))
    cur[rest[-1]] = value


def _arm_items(items: list[tuple[str, list[Any]]], arm: Any, name: str,
               blame: Blame) -> list[tuple[str, list[Any]]]:
    """The file's grid with the values an arm's own ``grid:`` replaces."""
    if not isinstance(arm, dict) or "grid" not in arm:
        return items
    where = ("arms", name, "grid")
    own = dict(_check(arm["grid"], blame, where))
    for key in own:
        if key not in dict(items):
            raise blame(f"{key!r} is not a key of the file's grid: block (an arm's grid only replaces "
                        f"values of those: {', '.join(k for k, _ in items)})", (*where, key))
    return [(k, own.get(k, v)) for k, v in items]


def expand(data: dict, lines: dict, blame: Blame) -> None:
    """Replace ``data['arms']`` by the grid expansion (in place) and give the new arms line origins."""
    arms = data.get("arms")
    if "grid" not in data:
        for name, arm in (arms.items() if isinstance(arms, dict) else ()):
            if isinstance(arm, dict) and "grid" in arm:
                raise blame("an arm's grid replaces values of the file's grid: block, and there is none",
                            ("arms", name, "grid"))
        return
    items = _check(data.pop("grid"), blame)
    if not isinstance(arms, dict) or not arms:
        return                                  # the schema check reports the missing arms
    default_loss = ((data.get("defaults") or {}).get("loss")) or [{"name": "kl"}, {"name": "mse"}]
    keys = [k for k, _ in items]
    new: dict[str, Any] = {}
    first: dict[str, str] = {}
    for name, arm in arms.items():
        for combo in itertools.product(*(v for _, v in _arm_items(items, arm, name, blame))):
            a = copy.deepcopy(arm) if isinstance(arm, dict) else {}
            a.pop("grid", None)
            for k, v in zip(keys, combo):
                _apply(a, k, v, default_loss, name, blame)
            a["swept"] = dict(zip(keys, combo))
            full = name + "".join(f"{SEP}{k}{EQ}{label(v)}" for k, v in zip(keys, combo))
            new[full] = a
            first.setdefault(name, full)
            for path, origin in list(lines.items()):       # errors inside the arm point at its lines
                if path[:2] == ("arms", name):
                    lines[("arms", full) + path[2:]] = origin
            for k in keys:
                lines.setdefault(("arms", full, "swept", k), lines.get(("arms", name, "grid", k))
                                 or lines.get(("grid", k), lines.get(("grid",))))
    data["arms"] = new
    if data.get("baseline") in first:
        data["baseline"] = first[data["baseline"]]
