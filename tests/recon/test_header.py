"""The ISMRMRD header keys: a multi-echo acquisition's echo times, one per contrast, and the
cardiac cycle."""

from __future__ import annotations

from voxelhub.recon.header import format_header, parse_header


def test_each_contrast_keeps_its_echo_time() -> None:
    header = parse_header(format_header({"encoded_matrix": [64, 48, 1], "echo_times_ms": [5, 12]}))
    assert header["echo_times_ms"] == [5.0, 12.0]
    assert header["echo_time_ms"] == 5.0  # the first echo, as a single-echo reader sees it


def test_a_single_echo_has_no_list() -> None:
    header = parse_header(format_header({"encoded_matrix": [64, 48, 1], "echo_time_ms": 30}))
    assert header["echo_time_ms"] == 30.0 and "echo_times_ms" not in header


def test_the_cardiac_cycle_comes_from_the_user_parameters() -> None:
    written = format_header({"encoded_matrix": [8, 8, 1], "rr_interval_ms": 850.0})
    assert parse_header(written)["rr_interval_ms"] == 850.0
    long = written.replace("userParameterDouble", "userParameterLong").replace(
        "RRInterval", "HeartRate"
    )
    parsed = parse_header(long.replace("850.0", "72"))
    assert parsed["heart_rate_bpm"] == 72.0 and "rr_interval_ms" not in parsed
