"""Fixtures for segmentation tests: small real models, bundles and synthetic cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK
import torch

from tests.segment.bundles import (
    SPLEEN_METADATA,
    balance_classes,
    spleen_inference,
    spleen_network,
    write_bundle,
)
from voxelhub.segment.synthetic import SyntheticCase, ct_case, dicom_series, write_series

# A CT "spleen" network made by hand: the windowed intensity (HU -57..164 → 0..1) is
# averaged over 3x3x3 voxels and passed through a tent around the spleen's 110 HU, so
# spleen voxels score and liver (60 HU), kidneys (150 HU) and bone do not.
SPLEEN_LOW, SPLEEN_PEAK, SPLEEN_HIGH = 0.65, 0.755, 0.86


def tent_network(threshold: float = 0.03) -> torch.nn.Module:
    network = torch.nn.Sequential(
        torch.nn.Conv3d(1, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(3, 1, 1, bias=False),
        torch.nn.Conv3d(1, 2, 3, padding=1),
    )
    mean, tent, score = network[0], network[2], network[3]
    with torch.no_grad():
        mean.weight.fill_(1.0 / 27.0)
        mean.bias.copy_(torch.tensor([-SPLEEN_LOW, -SPLEEN_PEAK, -SPLEEN_HIGH]))
        tent.weight.copy_(torch.tensor([1.0, -2.0, 1.0]).reshape(1, 3, 1, 1, 1))
        # The tent response averaged again: thin shells where other tissues' edges pass
        # through 110 HU score low; the spleen's interior scores high.
        score.weight.zero_()
        score.weight[1].fill_(40.0 / 27.0)
        score.bias.copy_(torch.tensor([0.0, -40.0 * threshold]))
    return network.eval()


SPLEEN_CARD: dict[str, Any] = {
    "name": "Spleen tent",
    "version": "1.0",
    "modality": "CT",
    "inputs": [{"role": "ct", "modality": "CT"}],
    "labels": {"1": "spleen"},
    "output": "softmax",
    "roi_size": [32, 32, 32],
    "overlap": 0.25,
    "sw_batch_size": 2,
    "spacing": [2.5, 2.5, 4.0],
    "orientation": "RAS",
    "intensity": {"window": [-57, 164]},
}


@pytest.fixture(scope="session")
def tent_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(TorchScript file, model card) of the hand-made spleen network."""
    folder = tmp_path_factory.mktemp("tent")
    path = folder / "model.ts"
    torch.jit.save(torch.jit.script(tent_network()), str(path))
    card = folder / "card.json"
    card.write_text(json.dumps(SPLEEN_CARD))
    return path, card


@pytest.fixture(scope="session")
def ct() -> SyntheticCase:
    return ct_case(shape=(24, 64, 64), spacing=(2.5, 2.5, 4.0), seed=3)


@pytest.fixture(scope="session")
def small_ct() -> SyntheticCase:
    """A case small enough for the spleen bundle's 1.5 mm grid to stay a few patches."""
    return ct_case(shape=(12, 32, 32), spacing=(2.5, 2.5, 4.0), seed=5)


@pytest.fixture(scope="session")
def ct_series(ct: SyntheticCase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct-series")
    return write_series(
        dicom_series(ct.image, ct.geometry, series_description="CT abdomen"), folder
    )


@pytest.fixture(scope="session")
def spleen_bundle(tmp_path_factory: pytest.TempPathFactory, small_ct: SyntheticCase) -> Path:
    """The zoo's spleen bundle config with a small U-Net (random weights, classes balanced
    on `small_ct`) and ROI 32."""
    torch.manual_seed(0)
    channels = [4, 8, 16]
    network = spleen_network(channels)
    windowed = np.clip((small_ct.image.astype(np.float32) + 57) / 221, 0, 1)
    sample = torch.from_numpy(windowed.transpose(2, 1, 0)[None, None, :, :, :8].copy())
    balance_classes(network, sample)
    root = tmp_path_factory.mktemp("bundles") / "spleen_ct_segmentation"
    return write_bundle(root, SPLEEN_METADATA, spleen_inference(channels=channels, roi=32), network)


def image_of(case: SyntheticCase) -> SimpleITK.Image:
    return case.to_image(case.image)
