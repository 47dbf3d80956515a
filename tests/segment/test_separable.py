"""Axis-by-axis inversion of `Spacingd` gives MONAI's `grid_sample` values."""

import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms import Compose, Orientationd, Spacingd

from voxelhub.segment.separable import SeparableResample, is_axis_aligned


def _inverted(
    image: MetaTensor, pixdim: tuple[float, ...], padding: str, *, separable: bool
) -> torch.Tensor:
    spacing = Spacingd(
        keys="image", pixdim=pixdim, mode="bilinear", padding_mode=padding, dtype=torch.float32
    )
    if separable:
        inner = spacing.spacing_transform
        inner.sp_resample = SeparableResample.like(inner.sp_resample)
    steps = Compose([Orientationd(keys="image", axcodes="RAS"), spacing])
    network_grid = steps({"image": image.clone()})["image"]
    prediction = MetaTensor(
        torch.randn(2, *network_grid.shape[1:], generator=torch.Generator().manual_seed(1)),
        affine=network_grid.affine,
        meta=dict(network_grid.meta),
    )
    prediction.applied_operations = list(network_grid.applied_operations)
    if separable:
        assert prediction.applied_operations[-1]["class"] == "SeparableResample"
    inverted = steps.inverse({"image": prediction})["image"]
    assert isinstance(inverted, MetaTensor)
    return inverted


@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize(
    ("pixdim", "size", "flip"),
    [((1.5, 1.5, 2.0), (40, 36, 12), False), ((0.7, 1.3, 3.0), (21, 30, 11), True)],
)
def test_separable_inverse_matches_monai(
    padding: str, pixdim: tuple[float, ...], size: tuple[int, int, int], flip: bool
) -> None:
    affine = torch.tensor(np.diag([0.8, 0.8, 2.0, 1.0]), dtype=torch.float64)
    affine[:3, 3] = torch.tensor([-10.0, 5.0, 3.0])
    if flip:  # an LPS image: Orientationd flips it before Spacingd
        affine[0, 0], affine[1, 1] = -0.8, -0.8
    image = MetaTensor(
        torch.rand(1, *size, generator=torch.Generator().manual_seed(0)), affine=affine
    )
    expected = _inverted(image, pixdim, padding, separable=False)
    got = _inverted(image, pixdim, padding, separable=True)
    assert got.shape == expected.shape == (2, *size)
    assert torch.allclose(got.affine, expected.affine)
    assert float((got.as_tensor() - expected.as_tensor()).abs().max()) < 1e-4


def test_rotations_are_not_axis_aligned() -> None:
    angle = np.deg2rad(10)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert is_axis_aligned(np.diag([0.5, 2.0, 1.0, 1.0]))
    assert not is_axis_aligned(rotation)
