"""One place that checks transform arguments; every error names the argument and the bad value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["parse_range", "parse_choices", "parse_axes", "check_positive", "check_probability"]


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ValueError naming ``name`` when it is not (strictly) positive."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


def check_probability(value: float, name: str = "prob") -> float:
    """A probability in [0, 1]; never clipped silently."""
    v = check_positive(value, name, allow_zero=True)
    if v > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def parse_range(
    value: float | Sequence[float], name: str, min_value: float | None = None, max_value: float | None = None
) -> tuple[float, float]:
    """A number ``x`` means ``(x, x)``; a pair ``(lo, hi)`` needs ``lo <= hi``; both within bounds."""
    if np.isscalar(value):
        lo = hi = value
    else:
        seq = list(value)  # type: ignore[arg-type]
        if len(seq) != 2:
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
        lo, hi = seq
    try:
        lo, hi = float(lo), float(hi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite (min, max) pair with min <= max, got {value!r}")
    if min_value is not None and lo < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value!r}")
    if max_value is not None and hi > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value!r}")
    return lo, hi


def parse_choices(value, name: str, allowed: Sequence[str] | None = None) -> tuple:
    """A single choice or a non-empty sequence of choices, each in ``allowed`` when given."""
    seq = [value] if isinstance(value, str) or np.isscalar(value) else list(value)
    if not seq:
        raise ValueError(f"{name} must not be empty")
    if allowed is not None:
        for v in seq:
            if v not in allowed:
                raise ValueError(f"{name} must be among {list(allowed)}, got {v!r}")
    return tuple(seq)


def parse_axes(value: int | Sequence[int], name: str = "axis", spatial_dims: int = 3) -> tuple[int, ...]:
    """Spatial axes (0-based, channel excluded) as a tuple of distinct ints in range."""
    seq = [value] if np.isscalar(value) else list(value)  # type: ignore[arg-type]
    if not seq:
        raise ValueError(f"{name} must name at least one spatial axis")
    out = []
    for a in seq:
        if isinstance(a, bool) or int(a) != a or not 0 <= int(a) < spatial_dims:
            raise ValueError(f"{name} must be spatial axes in 0..{spatial_dims - 1}, got {value!r}")
        out.append(int(a))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {value!r}")
    return tuple(out)
