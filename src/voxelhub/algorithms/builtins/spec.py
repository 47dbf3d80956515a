"""What a built-in algorithm declares: its slug, interfaces and resources.

The fields match the registry's `Interface` and `Resources` schemas, so
`SPEC.model_dump(mode="json")` is what the catalog stores for a built-in's version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A built-in's entry point: fn(input_dir, output_dir, model_dir), writing under output_dir.
BuiltinFn = Callable[[Path, Path, Path], None]
ValueKindName = Literal["dicom_series", "image", "file", "json", "number", "text", "report"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InterfaceSpec(_Frozen):
    """One input or output: its interface name and the kind of value it holds."""

    interface: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")
    kind: ValueKindName
    description: str = ""


class Resources(_Frozen):
    """Where a job of the algorithm runs and what it may use."""

    queue: Literal["cpu", "gpu"] = "cpu"
    fallback_queue: Literal["cpu", "gpu"] | None = None
    memory_mb: int = Field(default=2048, gt=0)
    time_limit_s: float = Field(default=600, gt=0)


class BuiltinSpec(_Frozen):
    """A built-in algorithm as the registry lists it."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    inputs: tuple[InterfaceSpec, ...]
    outputs: tuple[InterfaceSpec, ...]
    resources: Resources = Resources()
