"""How a reconstruction's images are split into MR series."""

from __future__ import annotations

import numpy as np
import pytest

from voxelhub.recon.errors import ReconError
from voxelhub.recon.series import series_parts

RAW = {"file": "meas.h5", "sha256": "0" * 64}


def _image(contrast: int, slice_: int) -> dict[str, int]:
    return {"set": 0, "repetition": 0, "phase": 0, "contrast": contrast, "slice": slice_}


def test_an_image_list_that_does_not_describe_the_images_is_refused() -> None:
    header = {"images": [_image(0, 0), _image(1, 0), _image(0, 1)]}
    images = np.ones((2, 4, 4), np.float32)
    with pytest.raises(ReconError, match=r"lists 3 images .* for 2 reconstructed"):
        series_parts(header, images, recorded={"method": "grappa"}, raw=RAW)


def test_echoes_without_their_times_have_no_echo_time() -> None:
    header = {"images": [_image(0, 0), _image(1, 0)], "echo_time_ms": 5.0}
    parts = series_parts(
        header, np.ones((2, 4, 4), np.float32), recorded={"method": "grappa"}, raw=RAW
    )
    assert [(p.context.echo_number, p.context.echo_time_ms) for p in parts] == [(1, 5.0), (2, None)]


def _phase(phase: int, slice_: int) -> dict[str, int]:
    return {"set": 0, "repetition": 0, "phase": phase, "contrast": 0, "slice": slice_}


def test_cardiac_phases_are_one_cine_series_with_their_trigger_times() -> None:
    images = [_phase(p, s) for p in range(3) for s in range(2)]
    header = {"images": images, "trigger_times_ms": [30.0, 31.0, 430.0, 431.0, 830.0, 829.0]}
    (part,) = series_parts(
        header, np.ones((6, 4, 4), np.float32), recorded={"method": "grappa"}, raw=RAW
    )
    assert part.cardiac is not None and part.cardiac.count == 3
    assert part.cardiac.phases == (0, 0, 1, 1, 2, 2)
    assert part.cardiac.trigger_times_ms == (30.0, 31.0, 430.0, 431.0, 830.0, 829.0)
    assert part.context.series_description == "grappa reconstruction, cine"
    # Without the acquisitions' geometry a slice's phases still share a position.
    assert part.geometry is not None and len(set(part.geometry.centres_mm)) == 2


def test_echoes_of_a_cine_are_a_cine_series_each() -> None:
    images = [{**_phase(p, 0), "contrast": c} for c in range(2) for p in range(2)]
    parts = series_parts(
        {"images": images}, np.ones((4, 4, 4), np.float32), recorded={"method": "grappa"}, raw=RAW
    )
    assert [p.context.series_description for p in parts] == [
        "grappa reconstruction, echo 1, cine",
        "grappa reconstruction, echo 2, cine",
    ]
    assert all(p.cardiac is not None and p.cardiac.trigger_times_ms is None for p in parts)
