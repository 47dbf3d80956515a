import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
import torch

from tests.segment.conftest import SPLEEN_CARD, image_of, tent_network
from voxelhub.segment import SegmentError, load_model
from voxelhub.segment.card import read_card
from voxelhub.segment.metrics import dice
from voxelhub.segment.synthetic import SyntheticCase


def test_a_torchscript_network_with_its_card_segments_the_spleen(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    model = load_model(tent_model[0], card=tent_model[1], runtime="eager")
    assert model.metadata.modality == "CT" and model.metadata.label_names == {1: "spleen"}
    assert model.metadata.labels[0].property_type.value == "78961009"  # SCT Spleen
    labels = model.predict([image_of(ct)])
    assert labels.GetSize() == image_of(ct).GetSize()
    assert labels.GetSpacing() == image_of(ct).GetSpacing()
    assert dice(SimpleITK.GetArrayFromImage(labels) == 1, ct.labels == 1) > 0.6


def test_one_window_over_the_case_equals_the_network_applied_directly(
    tent_model: tuple[Path, Path], ct: SyntheticCase, tmp_path: Path
) -> None:
    """With the card's grid equal to the case's and one window, nothing may move a voxel."""
    card = tmp_path / "card.json"
    card.write_text(json.dumps({**SPLEEN_CARD, "roi_size": [64, 64, 24]}))
    labels = load_model(tent_model[0], card=card, runtime="eager").predict([image_of(ct)])
    windowed = np.clip((ct.image.astype(np.float32) + 57) / 221, 0, 1)
    with torch.no_grad():
        direct = tent_network()(torch.from_numpy(windowed)[None, None])[0].argmax(0).numpy()
    assert np.array_equal(SimpleITK.GetArrayFromImage(labels), direct)


def test_the_label_map_follows_the_input_orientation(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    """A flipped, shifted copy of the case gives the same labels in patient space."""
    image = image_of(ct)
    flipped = SimpleITK.Flip(image, [True, False, True])
    model = load_model(tent_model[0], card=tent_model[1], runtime="eager")
    direct = model.predict([image])
    via_flip = model.predict([flipped])
    assert via_flip.GetDirection() == flipped.GetDirection()
    back = SimpleITK.Resample(
        via_flip, direct, SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0
    )
    same = dice(SimpleITK.GetArrayFromImage(back) == 1, SimpleITK.GetArrayFromImage(direct) == 1)
    assert same > 0.97


def test_an_onnx_network_runs_with_the_same_card(
    tent_model: tuple[Path, Path], ct: SyntheticCase, tmp_path: Path
) -> None:
    onnx_path = tmp_path / "model.onnx"
    torch.onnx.export(
        tent_network(),
        (torch.zeros(1, 1, 32, 32, 32),),
        str(onnx_path),
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},
        dynamo=False,
    )
    model = load_model(onnx_path, card=tent_model[1], runtime="onnx")
    labels = SimpleITK.GetArrayFromImage(model.predict([image_of(ct)]))
    assert dice(labels == 1, ct.labels == 1) > 0.6
    with pytest.raises(SegmentError, match="cannot run an ONNX file; use onnx, int8"):
        load_model(onnx_path, card=tent_model[1], runtime="eager")


def test_a_malformed_card_names_the_key(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({**SPLEEN_CARD, "roi_size": [32, 32]}))
    with pytest.raises(SegmentError, match=r"card.json: key 'roi_size"):
        read_card(card)
    card.write_text('{"name": "x",')
    with pytest.raises(SegmentError, match=r"card.json: not valid JSON \(line 1"):
        read_card(card)
    card.write_text(json.dumps({**SPLEEN_CARD, "labels": {"0": "background"}}))
    with pytest.raises(SegmentError, match="labels run from 1 to 255"):
        read_card(card)


def test_a_model_that_does_not_load_is_refused(
    tent_model: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "model.ts"
    broken.write_bytes(b"not a model")
    with pytest.raises(SegmentError, match="is not a TorchScript model"):
        load_model(broken, card=tent_model[1])
    with pytest.raises(SegmentError, match="needs a model card"):
        load_model(tent_model[0])


def test_inputs_in_the_wrong_number_are_refused(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    model = load_model(tent_model[0], card=tent_model[1], runtime="eager")
    with pytest.raises(SegmentError, match="takes 1 input"):
        model.predict([image_of(ct), image_of(ct)])
    with pytest.raises(SegmentError, match="missing"):
        model.predict({"t1": image_of(ct)})
    assert np.asarray(SimpleITK.GetArrayFromImage(model.predict({"ct": image_of(ct)}))).max() == 1
