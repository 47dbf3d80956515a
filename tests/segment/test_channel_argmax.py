"""The fast argmax over channels gives what MONAI's own `AsDiscreted` gives, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.compose import Compose
from monai.transforms.post.dictionary import AsDiscreted

from voxelhub.segment.bundle import ChannelArgmaxDiscrete, _without_saving
from voxelhub.segment.inference import channel_argmax, discretize


@pytest.mark.parametrize("channels", [1, 2, 3, 7])
def test_channel_argmax_is_torch_argmax_with_ties_and_nans(channels: int) -> None:
    generator = torch.Generator().manual_seed(channels)
    # Few distinct values: many ties, where the first channel must win as in torch.argmax.
    values = torch.randint(0, 3, (channels, 9, 8, 7), generator=generator).float()
    assert torch.equal(channel_argmax(values).long(), torch.argmax(values, dim=0))
    values[-1, 1, 2, 3] = float("nan")
    assert torch.equal(channel_argmax(values).long(), torch.argmax(values, dim=0))
    integers = torch.randint(0, 5, (channels, 4, 4), generator=generator)
    assert torch.equal(channel_argmax(integers).long(), torch.argmax(integers, dim=0))


def test_channel_argmax_refuses_values_without_channels() -> None:
    with pytest.raises(ValueError, match="C >= 1"):
        channel_argmax(torch.zeros((0, 3)))


def test_discretize_softmax_is_numpy_argmax() -> None:
    probabilities = np.random.default_rng(1).random((4, 6, 5, 3)).astype(np.float32)
    expected = np.argmax(probabilities, axis=0).astype(np.uint8)
    np.testing.assert_array_equal(discretize(probabilities, "softmax"), expected)


@pytest.mark.parametrize(
    "options",
    [
        {"argmax": True},
        {"argmax": True, "to_onehot": 3},
        {"argmax": True, "keepdim": False, "dtype": torch.uint8},
        {"argmax": True, "rounding": "torchrounding"},
        {"threshold": 0.5},
    ],
)
def test_bundle_postprocessing_argmax_matches_monai(options: dict[str, object]) -> None:
    generator = torch.Generator().manual_seed(7)
    affine = torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0], dtype=torch.float64))
    prediction = MetaTensor(torch.rand((3, 10, 9, 8), generator=generator), affine=affine)
    prediction[:, 0, 0, 0] = 0.25  # a tie between all channels
    monai_step = AsDiscreted(keys="pred", **options)  # type: ignore[arg-type]
    ours = _without_saving(Compose([AsDiscreted(keys="pred", **options)]))  # type: ignore[arg-type]
    if options.get("argmax"):
        assert isinstance(ours.transforms[0].converter, ChannelArgmaxDiscrete)
    expected = monai_step({"pred": prediction.clone()})["pred"]
    got = ours({"pred": prediction.clone()})["pred"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    assert torch.equal(got.affine, expected.affine)
