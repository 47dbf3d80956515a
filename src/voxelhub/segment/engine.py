"""A network plus its runtime, settled on the first case when the runtime is "auto"."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from voxelhub.segment.choose import RuntimeChoice, choose_runtime
from voxelhub.segment.inference import Activation, activate, discretize
from voxelhub.segment.runtimes import (
    RUNTIMES,
    NetworkSource,
    PatchShape,
    Predictor,
    build_predictor,
)

logger = logging.getLogger(__name__)


class Engine:
    """Builds the predictor of `source` once; with "auto", measures runtimes on real patches."""

    def __init__(
        self,
        source: NetworkSource,
        patch: PatchShape,
        *,
        runtime: str,
        device: str,
        activation: Activation,
        values: Sequence[int] | None = None,
    ) -> None:
        if runtime != "auto" and runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)} or auto.")
        self.source, self.patch, self.device = source, patch, device
        self.activation, self.values = activation, values
        self.requested = runtime
        self.choice: RuntimeChoice | None = None
        self._predictor: Predictor | None = None
        self._runtime = runtime

    @property
    def runtime(self) -> str:
        return self._runtime

    def predictor(self, volume: npt.NDArray[np.float32] | torch.Tensor) -> Predictor:
        """The predictor; `volume` (C, X, Y, Z) provides the patches an "auto" choice times."""
        if self._predictor is None:
            if self.requested == "auto":
                self.choice = choose_runtime(
                    self.source,
                    self.patch,
                    discretize=self._labels,
                    example=representative_patches(volume, self.patch),
                    device=self.device,
                )
                self._runtime = self.choice.runtime
            self._predictor = build_predictor(
                self.source, self._runtime, self.patch, device=self.device
            )
        return self._predictor

    def _labels(self, logits: torch.Tensor) -> npt.NDArray[np.uint8]:
        maps = [
            discretize(activate(item, self.activation), self.activation, self.values)
            for item in logits
        ]
        return np.stack(maps)


def representative_patches(
    volume: npt.NDArray[np.float32] | torch.Tensor, patch: PatchShape
) -> torch.Tensor:
    """`patch.batch` ROI-sized crops spread along the volume's diagonal (zero-padded)."""
    array = volume.numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    array = np.asarray(array, dtype=np.float32)
    roi = np.array(patch.roi)
    short = np.maximum(roi - np.array(array.shape[1:]), 0)
    if short.any():
        array = np.pad(array, [(0, 0), *[(0, int(s)) for s in short]])
    spare = np.array(array.shape[1:]) - roi
    crops = []
    for index in range(patch.batch):
        start = (spare * (index + 1) // (patch.batch + 1)).astype(int)
        region = tuple(slice(int(s), int(s + r)) for s, r in zip(start, roi, strict=True))
        crops.append(array[(slice(None), *region)])
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))
