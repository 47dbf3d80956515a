"""Sliding-window inference on a whole volume and turning network outputs into labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference

from voxelhub.segment.runtimes import Predictor

Activation = Literal["softmax", "sigmoid"]


@dataclass(frozen=True, kw_only=True)
class WindowSettings:
    """How a volume is tiled into patches: ROI (network layout), overlap and batch size.

    `mode` blends overlapping patches ("constant" averages, "gaussian" weights centres),
    as in MONAI's `SlidingWindowInferer`.
    """

    roi: tuple[int, int, int]
    overlap: float = 0.5
    sw_batch_size: int = 4
    mode: Literal["constant", "gaussian"] = "constant"


def sliding_window(
    volume: npt.NDArray[np.float32],
    predictor: Predictor,
    settings: WindowSettings,
    *,
    device: str = "cpu",
) -> torch.Tensor:
    """Network outputs (C_out, X, Y, Z) for a (C, X, Y, Z) volume, patch by patch, on
    `device`: on a GPU the volume goes there once and the patches are cut and blended
    there, rather than each batch of patches and outputs crossing to and from the host."""
    inputs = torch.from_numpy(np.ascontiguousarray(volume))[None].to(device)
    with torch.inference_mode():
        output = sliding_window_inference(
            inputs,
            roi_size=settings.roi,
            sw_batch_size=settings.sw_batch_size,
            predictor=predictor,
            overlap=settings.overlap,
            mode=settings.mode,
        )
    assert isinstance(output, torch.Tensor)  # one predictor output, one tensor
    return output[0]


def activate(logits: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Probabilities of (C, ...) logits."""
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=0)
    return torch.sigmoid(logits.float())


def discretize(
    probabilities: npt.NDArray[np.floating] | torch.Tensor,
    activation: Activation,
    values: Sequence[int] | None = None,
) -> npt.NDArray[np.uint8]:
    """A label map from (C, ...) probabilities.

    softmax: the most probable channel's index. sigmoid (multi-label, e.g. nested tumour
    regions): each channel over 0.5 painted with `values[channel]` (channel + 1 by
    default), largest region first, so a voxel holds the most specific region it lies in.

    >>> p = np.array([[[0.2, 0.9]], [[0.8, 0.1]]])
    >>> discretize(p, "softmax").tolist(), discretize(p, "sigmoid").tolist()
    ([[1, 0]], [[2, 1]])
    """
    if activation == "softmax":
        tensor = (
            probabilities
            if isinstance(probabilities, torch.Tensor)
            else torch.from_numpy(np.asarray(probabilities))
        )
        return np.asarray(channel_argmax(tensor).numpy(), dtype=np.uint8)
    array = probabilities.numpy() if isinstance(probabilities, torch.Tensor) else probabilities
    values = list(values) if values is not None else list(range(1, array.shape[0] + 1))
    masks = array > 0.5
    labels = np.zeros(array.shape[1:], dtype=np.uint8)
    for channel in sorted(range(array.shape[0]), key=lambda c: -int(masks[c].sum())):
        labels[masks[channel]] = values[channel]
    return np.asarray(labels, dtype=np.uint8)


def channel_argmax(values: torch.Tensor) -> torch.Tensor:
    """The index of the largest channel of (C, ...) values, as `torch.argmax(values, dim=0)`.

    The same answer (the first channel on ties), by one comparison per channel: on CPU,
    `torch.argmax` over the first dimension of a large volume reduces across strided memory
    and takes seconds where this takes a fraction of one. uint8 for up to 256 channels,
    int64 beyond; values with a NaN (which argmax counts as largest) go to `torch.argmax`.

    >>> channel_argmax(torch.tensor([[0.2, 0.9, 0.5], [0.8, 0.1, 0.5]])).tolist()
    [1, 0, 0]
    """
    if values.ndim < 1 or values.shape[0] == 0:
        raise ValueError(f"channel_argmax takes (C, ...) values, C >= 1, not {tuple(values.shape)}")
    dtype = torch.uint8 if values.shape[0] <= 256 else torch.int64
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        return torch.argmax(values, dim=0).to(dtype)
    index = torch.zeros(values.shape[1:], dtype=dtype, device=values.device)
    best = values[0]
    for channel in range(1, values.shape[0]):
        candidate = values[channel]
        better = candidate > best
        index.masked_fill_(better, channel)
        if channel < values.shape[0] - 1:
            best = torch.maximum(best, candidate)
    return index


def fast_resampling(preprocessing: Any) -> int:
    """Makes a bundle's `Spacingd` steps resample in float32 and invert axis by axis.

    MONAI resamples in float64 by default: a float64 sampling grid of a 512x512x200 CT is
    1.2 GB; float32 halves the memory traffic of the forward resampling and of its
    inverse in `Invertd` (which reuses the recorded dtype), and the inverse, onto the
    CT's full grid, goes through `SeparableResample` (three 1D passes, no grid).
    Returns how many steps were changed.
    """
    from monai.transforms.compose import Compose
    from monai.transforms.spatial.dictionary import Spacingd

    from voxelhub.segment.separable import SeparableResample

    if not isinstance(preprocessing, Compose):
        return 0
    changed = 0
    for transform in preprocessing.transforms:
        if isinstance(transform, Spacingd):
            transform.dtype = (torch.float32,) * len(transform.dtype)
            spacing = transform.spacing_transform
            spacing.sp_resample = SeparableResample.like(spacing.sp_resample)
            changed += 1
    return changed


@dataclass(frozen=True)
class TwoClassPostprocessing:
    """``Activationsd(softmax) → Invertd → AsDiscreted(argmax)`` on two channels, fused.

    Resampling is linear and the two probabilities sum to one, so the argmax of the
    resampled probabilities is whether the resampled p1 - p0 is positive: one channel is
    inverted instead of two and the argmax becomes a comparison. Steps after the argmax
    run as configured. Outputs with other channel counts run the configured steps.
    """

    configured: Any
    invert: Any
    after: tuple[Any, ...]
    key: str

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        logits = data[self.key]
        if logits.shape[0] != 2:
            return dict(self.configured(data))
        probabilities = torch.softmax(logits.float(), dim=0)
        difference = probabilities[1:2] - probabilities[0:1]
        inverted = self.invert({**data, self.key: difference})
        labels = (inverted[self.key] > 0).to(torch.float32)
        result: dict[str, Any] = {**inverted, self.key: labels}
        for transform in self.after:
            result = transform(result)
        return result


def fused_postprocessing(postprocessing: Any, key: str) -> TwoClassPostprocessing | None:
    """The fused form of a bundle's postprocessing when it is softmax, invert, argmax.

    None when the steps differ from that pattern (they then run as configured).
    """
    from monai.transforms.compose import Compose
    from monai.transforms.post.dictionary import Activationsd, AsDiscreted, Invertd

    if not isinstance(postprocessing, Compose) or len(postprocessing.transforms) < 3:
        return None
    activation, invert, argmax, *after = postprocessing.transforms
    if not (
        isinstance(activation, Activationsd)
        and tuple(activation.keys) == (key,)
        and bool(activation.softmax[0])
        and not bool(activation.sigmoid[0])
        and activation.other[0] is None
        and not activation.converter.kwargs
        and isinstance(invert, Invertd)
        and tuple(invert.keys) == (key,)
        and not bool(invert.nearest_interp[0])
        and invert.post_func[0] is None
        and isinstance(argmax, AsDiscreted)
        and tuple(argmax.keys) == (key,)
        and bool(argmax.argmax[0])
        and argmax.to_onehot[0] is None
        and argmax.threshold[0] is None
        and argmax.rounding[0] is None
        and not argmax.converter.kwargs
    ):
        return None
    return TwoClassPostprocessing(postprocessing, invert, tuple(after), key)
