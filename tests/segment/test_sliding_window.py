"""The sliding window blends patches into the same outputs wherever it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from voxelhub.segment.inference import WindowSettings, sliding_window
from voxelhub.segment.runtimes import NetworkSource, PatchShape, build_predictor

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here"
))]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_are_the_host_placements_and_cover_the_volume(device: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    ).eval()
    source = NetworkSource(network, None, "test", tmp_path)
    settings = WindowSettings(roi=(16, 16, 8), overlap=0.5, sw_batch_size=3)
    predictor = build_predictor(source, "eager", PatchShape(1, settings.roi, 3), device=device)
    volume = np.random.default_rng(1).random((1, 40, 36, 20), dtype=np.float32)
    on_host = sliding_window(volume, predictor, settings)
    placed = sliding_window(volume, predictor, settings, device=device)
    assert on_host.device.type == "cpu" and placed.device.type == device
    assert placed.shape == (2, 40, 36, 20)
    np.testing.assert_allclose(placed.cpu().numpy(), on_host.numpy(), rtol=1e-4, atol=1e-5)
    # Every voxel was covered: a voxel no window reached would be 0 in both channels.
    assert not (on_host == 0).all(dim=0).any()
