"""Query parameters of the viewer API, checked with messages that say what is allowed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from voxelhub.viewer.errors import InvalidParameter
from voxelhub.viewer.render.display import MAX_SIZE, ImageFormat
from voxelhub.viewer.render.geometry import Plane
from voxelhub.viewer.render.planes import Mode
from voxelhub.viewer.render.stats import Shape

DEFAULT_SIZE = 512
MAX_SLAB_MM = 1000.0
E = TypeVar("E", bound=StrEnum)
_BOOLEANS = {"0": False, "1": True, "false": False, "true": True}


def integer(
    query: Mapping[str, str],
    name: str,
    *,
    default: int | None = None,
    low: int | None = None,
    high: int | None = None,
) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise InvalidParameter(f"{name} is required: add ?{name}=<whole number>")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number, not {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        allowed = f"{low if low is not None else '…'}..{high if high is not None else '…'}"
        raise InvalidParameter(f"{name}={value} is out of range: use {allowed}")
    return value


def number(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidParameter(f"{name} must be a finite number, not {raw!r}")
    return value


def choice(query: Mapping[str, str], name: str, kind: type[E], default: E) -> E:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw.lower())
    except ValueError:
        allowed = "|".join(member.value for member in kind)
        raise InvalidParameter(f"{name} must be one of {allowed}, not {raw!r}") from None


@dataclass(frozen=True)
class View2D:
    """Which image: plane, index, projection and output size."""

    plane: Plane
    index: int
    mode: Mode
    slab_mm: float
    size: int

    @classmethod
    def parse(cls, query: Mapping[str, str], *, default_index: int | None = None) -> View2D:
        slab = number(query, "slab") or 0.0
        if not 0 <= slab <= MAX_SLAB_MM:
            raise InvalidParameter(f"slab is a thickness in mm: use 0..{MAX_SLAB_MM:g}")
        return cls(
            plane=choice(query, "plane", Plane, Plane.AXIAL),
            index=integer(query, "index", default=default_index, low=0),
            mode=choice(query, "mode", Mode, Mode.SLICE),
            slab_mm=slab,
            size=integer(query, "size", default=DEFAULT_SIZE, low=1, high=MAX_SIZE),
        )


@dataclass(frozen=True)
class Display:
    """How values become pixels: window (None: the series' default), invert, format."""

    center: float | None
    width: float | None
    invert: bool
    image_format: ImageFormat

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Display:
        center, width = number(query, "wc"), number(query, "ww")
        if width is not None and width <= 0:
            raise InvalidParameter(f"ww (the window width) must be > 0, not {width:g}")
        invert = query.get("invert", "0").lower()
        if invert not in _BOOLEANS:
            raise InvalidParameter(f"invert must be 0 or 1, not {invert!r}")
        return cls(
            center, width, _BOOLEANS[invert], choice(query, "format", ImageFormat, ImageFormat.PNG)
        )


@dataclass(frozen=True)
class Region:
    box: tuple[int, int, int, int]
    shape: Shape

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Region:
        box = (
            integer(query, "x0", low=0),
            integer(query, "y0", low=0),
            integer(query, "x1", low=0),
            integer(query, "y1", low=0),
        )
        return cls(box, choice(query, "shape", Shape, Shape.RECT))
