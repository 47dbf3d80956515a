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
