"""Choosing the one series an algorithm needs from all the series it was given."""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxelhub.algorithms.pipeline.errors import SeriesSelectionError
from voxelhub.algorithms.pipeline.operator import Operator, PortValues
from voxelhub.algorithms.pipeline.values import SeriesCollection, SeriesData


@dataclass(frozen=True, kw_only=True)
class SeriesRules:
    """What a series must be to be selected; a rule left as None accepts anything.

    `modality` and `body_part` compare without case; `description` is a regular expression
    searched (without case) in the SeriesDescription. `min_images` counts images, each
    frame of a multi-frame instance one (an Enhanced CT volume is one instance of many
    frames); `min_instances` counts instances.

    >>> SeriesRules(modality="CT", description="chest|thorax", min_instances=20).describe()
    "modality CT, description matching 'chest|thorax', at least 20 instances"
    """

    modality: str | None = None
    description: str | None = None
    body_part: str | None = None
    min_instances: int = 1
    min_images: int = 1

    def __post_init__(self) -> None:
        if self.description is not None:
            try:
                re.compile(self.description)
            except re.error as err:
                raise ValueError(
                    f"Series description rule {self.description!r} is not a valid regular "
                    f"expression: {err}."
                ) from err
        for name in ("min_instances", "min_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}.")

    def mismatches(self, series: SeriesData) -> list[str]:
        """Why `series` does not match, one reason per failed rule (empty when it matches)."""
        reasons = []
        if self.modality and series.modality.upper() != self.modality.upper():
            reasons.append(f"modality is {series.modality or 'missing'}")
        if self.description and not re.search(
            self.description, series.series_description, re.IGNORECASE
        ):
            reasons.append(f"description {series.series_description!r} does not match")
        if self.body_part and series.body_part_examined.upper() != self.body_part.upper():
            reasons.append(f"body part is {series.body_part_examined or 'missing'}")
        if series.number_of_instances < self.min_instances:
            reasons.append(f"only {series.number_of_instances} instances")
        if series.number_of_images < self.min_images:
            reasons.append(f"only {series.number_of_images} images")
        return reasons

    def describe(self) -> str:
        parts = []
        if self.modality:
            parts.append(f"modality {self.modality}")
        if self.description:
            parts.append(f"description matching {self.description!r}")
        if self.body_part:
            parts.append(f"body part {self.body_part}")
        parts.append(f"at least {self.min_instances} instances")
        if self.min_images > 1:
            parts.append(f"at least {self.min_images} images")
        return ", ".join(parts)


class SeriesSelector(Operator):
    """Selects the series that matches the rules; of several, the one with most images."""

    input_ports = {"series": SeriesCollection}
    output_ports = {"series": SeriesData}

    def __init__(self, rules: SeriesRules | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.rules = rules or SeriesRules()

    def compute(self, inputs: PortValues) -> dict[str, object]:
        collection = inputs.get("series", SeriesCollection)
        matching = [s for s in collection.series if not self.rules.mismatches(s)]
        if not matching:
            available = "; ".join(
                f"{s.describe()}: {', '.join(self.rules.mismatches(s))}" for s in collection.series
            )
            raise SeriesSelectionError(
                self.name,
                f"no series has {self.rules.describe()}. Available: {available or 'none'}.",
            )
        best = max(matching, key=lambda s: (s.number_of_images, s.number_of_instances))
        return {"series": best}
