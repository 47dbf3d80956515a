import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK
import torch

from tests.segment.bundles import (
    BRATS_METADATA,
    SPLEEN_METADATA,
    brats_inference,
    brats_network,
    spleen_inference,
    write_bundle,
)
from tests.segment.conftest import image_of
from voxelhub.segment import SegmentError, load_model
from voxelhub.segment.metrics import dice
from voxelhub.segment.synthetic import SyntheticCase, ct_case, mr_brain_case

THRESHOLD_HU = 85.0  # between liver (60 HU) and spleen (110 HU)


def threshold_bundle(root: Path) -> Path:
    """The spleen bundle's config with a 1x1x1 convolution that scores HU > 85 as label 1."""
    inference = spleen_inference(channels=[4, 8], roi=32)
    inference["network_def"] = {
        "_target_": "torch.nn.Conv3d",
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 1,
    }
    network = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1, 1))
        network.bias.copy_(torch.tensor([0.0, -(THRESHOLD_HU + 57) / 221]))  # type: ignore[union-attr]
    return write_bundle(root, SPLEEN_METADATA, inference, network)


def test_spleen_bundle_metadata(spleen_bundle: Path) -> None:
    model = load_model(spleen_bundle, runtime="eager")
    metadata = model.metadata
    assert (metadata.name, metadata.version, metadata.modality) == (
        "Spleen CT segmentation",
        "0.5.3",
        "CT",
    )
    assert metadata.label_names == {1: "spleen"}
    assert metadata.labels[0].property_type.meaning == "Spleen"


@pytest.mark.parametrize("flip", [(False, False, False), (True, False, True)])
def test_bundle_output_is_inverted_onto_the_input_grid(
    tmp_path: Path, flip: tuple[bool, bool, bool]
) -> None:
    """Orientationd, Spacingd and Invertd as configured: labels land where the tissue is."""
    case = ct_case(shape=(16, 40, 40), spacing=(2.5, 2.5, 4.0), seed=1, noise_hu=0.0)
    image = SimpleITK.Flip(image_of(case), list(flip))
    model = load_model(threshold_bundle(tmp_path / "bundle"), runtime="eager")
    labels = model.predict([image])
    assert labels.GetSize() == image.GetSize()
    assert labels.GetDirection() == image.GetDirection()
    assert labels.GetOrigin() == image.GetOrigin()
    expected = SimpleITK.GetArrayFromImage(image) > THRESHOLD_HU
    assert dice(SimpleITK.GetArrayFromImage(labels) == 1, expected) > 0.9


def test_brats_bundle_runs_four_mr_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = write_bundle(
        tmp_path / "brats_mri_segmentation",
        BRATS_METADATA,
        brats_inference(init_filters=8, roi=[32, 32, 16]),
        brats_network(8),
    )
    case = mr_brain_case(shape=(16, 32, 32), seed=0)
    model = load_model(root, runtime="eager")
    assert model.metadata.roles == ["t1c", "t1", "t2", "flair"]
    assert model.metadata.modality == "MR"
    assert [label.name for label in model.metadata.labels] == [
        "Tumor core",
        "Whole tumor",
        "Enhancing tumor",
    ]
    labels = model.predict(case.images())
    assert labels.GetSize() == (32, 32, 16)
    assert set(np.unique(SimpleITK.GetArrayFromImage(labels))) <= {0, 1, 2, 3}
    with pytest.raises(SegmentError, match=r"missing \['flair'\]"):
        model.predict({role: image for role, image in case.images().items() if role != "flair"})


def test_a_bundle_with_only_torchscript_weights_runs(
    spleen_bundle: Path, tmp_path: Path, small_ct: SyntheticCase
) -> None:
    ct = small_ct
    root = Path(shutil.copytree(spleen_bundle, tmp_path / "bundle"))
    model = load_model(root, runtime="eager")
    network = model.engine.source.module  # type: ignore[attr-defined]
    torch.jit.save(torch.jit.script(network), str(root / "models" / "model.ts"))
    (root / "models" / "model.pt").unlink()
    expected = SimpleITK.GetArrayFromImage(model.predict([image_of(ct)]))
    scripted = load_model(root, runtime="eager").predict([image_of(ct)])
    assert np.array_equal(SimpleITK.GetArrayFromImage(scripted), expected)


def _broken(spleen_bundle: Path, tmp_path: Path, change: Any) -> Path:
    root = Path(shutil.copytree(spleen_bundle, tmp_path / "bundle"))
    config = root / "configs" / "inference.json"
    document = json.loads(config.read_text())
    result = change(document)
    config.write_text(result if isinstance(result, str) else json.dumps(document))
    return root


def test_malformed_configs_name_the_file_and_key(spleen_bundle: Path, tmp_path: Path) -> None:
    def drop_inferer(document: dict[str, Any]) -> None:
        del document["inferer"]

    def bad_network(document: dict[str, Any]) -> None:
        document["network_def"]["_target_"] = "NoSuchNet"

    def bad_json(document: dict[str, Any]) -> str:
        return json.dumps(document)[:-10]

    cases = [
        (drop_inferer, r"inference.json: key 'inferer' is missing"),
        (bad_network, r"inference.json: key 'network_def' cannot be built"),
        (bad_json, r"inference.json: cannot parse the config"),
    ]
    for index, (change, message) in enumerate(cases):
        root = _broken(spleen_bundle, tmp_path / str(index), change)
        with pytest.raises(SegmentError, match=message):
            load_model(root)


def test_weights_that_do_not_fit_are_refused(spleen_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(spleen_bundle, tmp_path / "bundle"))
    torch.save({"nothing": torch.zeros(1)}, root / "models" / "model.pt")
    with pytest.raises(SegmentError, match=r"model.pt: the weights do not load"):
        load_model(root)


def test_missing_metadata_keys_are_named(spleen_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(spleen_bundle, tmp_path / "bundle"))
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    del metadata["network_data_format"]["outputs"]
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(SegmentError, match=r"network_data_format\.outputs"):
        load_model(root)
