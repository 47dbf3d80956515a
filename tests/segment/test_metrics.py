import numpy as np
import pytest

from voxelhub.segment.metrics import evaluate, evaluate_labels, surface


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    z, y, x = start
    mask[z : z + size, y : y + size, x : x + size] = True
    return mask


def test_offset_cubes_dice_iou_and_distances() -> None:
    a = cube((20, 20, 20), (5, 5, 5), 6)
    b = cube((20, 20, 20), (5, 5, 7), 6)  # shifted 2 voxels along x
    result = evaluate(a, b, spacing=(1.5, 1.0, 1.0))
    overlap = 6 * 6 * 4
    assert result["dice"] == pytest.approx(2 * overlap / (2 * 216))
    assert result["iou"] == pytest.approx(overlap / (216 + 216 - overlap))
    # No surface voxel is further than the shift (2 voxels of 1.5 mm along x) from the other.
    assert result["hd95_mm"] is not None and 0 < result["hd95_mm"] <= 3.0
    assert result["assd_mm"] is not None and 0 < result["assd_mm"] < result["hd95_mm"] + 1e-9


def test_parallel_plates_have_every_distance_equal_to_the_gap() -> None:
    a = np.zeros((10, 8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2], b[5] = True, True  # planes 3 slices apart, slices 2.5 mm apart
    result = evaluate(a, b, spacing=(1.0, 1.0, 2.5))
    assert result["dice"] == 0.0
    assert result["hd95_mm"] == pytest.approx(7.5)
    assert result["assd_mm"] == pytest.approx(7.5)


def test_identical_masks_are_perfect() -> None:
    a = cube((12, 12, 12), (2, 3, 4), 5)
    assert evaluate(a, a, spacing=(1, 1, 1)) == {
        "dice": 1.0,
        "iou": 1.0,
        "hd95_mm": 0.0,
        "assd_mm": 0.0,
    }


def test_empty_masks_are_handled_explicitly() -> None:
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = cube((5, 5, 5), (1, 1, 1), 2)
    assert evaluate(empty, empty, (1, 1, 1)) == {
        "dice": 1.0,
        "iou": 1.0,
        "hd95_mm": 0.0,
        "assd_mm": 0.0,
    }
    assert evaluate(full, empty, (1, 1, 1)) == {
        "dice": 0.0,
        "iou": 0.0,
        "hd95_mm": None,
        "assd_mm": None,
    }


def test_surface_of_a_cube_is_its_shell() -> None:
    shell = surface(cube((7, 7, 7), (1, 1, 1), 5))
    assert int(shell.sum()) == 5**3 - 3**3


def test_per_label_evaluation_names_labels() -> None:
    truth = np.zeros((6, 6, 6), dtype=np.uint8)
    truth[1:3], truth[4:6] = 1, 2
    prediction = truth.copy()
    prediction[4:6] = 0
    result = evaluate_labels(prediction, truth, (1, 1, 1), {1: "spleen", 2: "liver"})
    assert result["spleen"]["dice"] == 1.0
    assert result["liver"]["dice"] == 0.0 and result["liver"]["hd95_mm"] is None


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1))
