"""The ISMRMRD header keys: a multi-echo acquisition's echo times, one per contrast."""

from __future__ import annotations

from voxelhub.recon.header import format_header, parse_header


def test_each_contrast_keeps_its_echo_time() -> None:
    header = parse_header(format_header({"encoded_matrix": [64, 48, 1], "echo_times_ms": [5, 12]}))
    assert header["echo_times_ms"] == [5.0, 12.0]
    assert header["echo_time_ms"] == 5.0  # the first echo, as a single-echo reader sees it


def test_a_single_echo_has_no_list() -> None:
    header = parse_header(format_header({"encoded_matrix": [64, 48, 1], "echo_time_ms": 30}))
    assert header["echo_time_ms"] == 30.0 and "echo_times_ms" not in header
