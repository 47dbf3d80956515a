"""The web server's settings that uvicorn's configuration does not offer."""

from __future__ import annotations

from uvicorn.protocols.http import h11_impl, httptools_impl

from voxelhub.main import BODY_HIGH_WATER_BYTES, tune_body_reading


def test_body_reading_is_tuned_in_both_http_protocols() -> None:
    # Fails when a uvicorn release no longer reads the limit where it is set.
    tune_body_reading()
    assert vars(httptools_impl)["HIGH_WATER_LIMIT"] == BODY_HIGH_WATER_BYTES
    assert vars(h11_impl)["HIGH_WATER_LIMIT"] == BODY_HIGH_WATER_BYTES
