"""The HDF5 compound types and flag numbers of ISMRMRD 1.x acquisitions (`/dataset/data`)."""

from __future__ import annotations

import h5py
import numpy as np

ENCODING_COUNTERS = np.dtype(
    [
        ("kspace_encode_step_1", "<u2"),
        ("kspace_encode_step_2", "<u2"),
        ("average", "<u2"),
        ("slice", "<u2"),
        ("contrast", "<u2"),
        ("phase", "<u2"),
        ("repetition", "<u2"),
        ("set", "<u2"),
        ("segment", "<u2"),
        ("user", "<u2", (8,)),
    ]
)

ACQUISITION_HEADER = np.dtype(
    [
        ("version", "<u2"),
        ("flags", "<u8"),
        ("measurement_uid", "<u4"),
        ("scan_counter", "<u4"),
        ("acquisition_time_stamp", "<u4"),
        ("physiology_time_stamp", "<u4", (3,)),
        ("number_of_samples", "<u2"),
        ("available_channels", "<u2"),
        ("active_channels", "<u2"),
        ("channel_mask", "<u8", (16,)),
        ("discard_pre", "<u2"),
        ("discard_post", "<u2"),
        ("center_sample", "<u2"),
        ("encoding_space_ref", "<u2"),
        ("trajectory_dimensions", "<u2"),
        ("sample_time_us", "<f4"),
        ("position", "<f4", (3,)),
        ("read_dir", "<f4", (3,)),
        ("phase_dir", "<f4", (3,)),
        ("slice_dir", "<f4", (3,)),
        ("patient_table_position", "<f4", (3,)),
        ("idx", ENCODING_COUNTERS),
        ("user_int", "<i4", (8,)),
        ("user_float", "<f4", (8,)),
    ]
)

ACQUISITION = np.dtype(
    [
        ("head", ACQUISITION_HEADER),
        ("traj", h5py.vlen_dtype(np.float32)),
        ("data", h5py.vlen_dtype(np.float32)),
    ]
)

# ISMRMRD numbers flags from 1; flag n is bit n - 1 of `flags`.
FIRST_IN_SLICE = 7
LAST_IN_SLICE = 8
NOISE_MEASUREMENT = 19
PARALLEL_CALIBRATION = 20
PARALLEL_CALIBRATION_AND_IMAGING = 21
REVERSE = 22
NAVIGATION_DATA = 23
PHASECORR_DATA = 24
HPFEEDBACK_DATA = 26
DUMMYSCAN_DATA = 27
RTFEEDBACK_DATA = 28
SURFACECOILCORRECTIONSCAN_DATA = 29
PHASE_STABILIZATION_REFERENCE = 30
PHASE_STABILIZATION = 31

# Acquisitions that are not lines of the image: they carry a phase-encode index (often the
# centre line) but another signal, so gridding them would corrupt that line.
NOT_IMAGING = (
    NOISE_MEASUREMENT,
    NAVIGATION_DATA,
    PHASECORR_DATA,
    HPFEEDBACK_DATA,
    DUMMYSCAN_DATA,
    RTFEEDBACK_DATA,
    SURFACECOILCORRECTIONSCAN_DATA,
    PHASE_STABILIZATION_REFERENCE,
    PHASE_STABILIZATION,
)


def bits(*flags: int) -> np.uint64:
    """The `flags` word with the given ISMRMRD flag numbers set.

    >>> int(bits(NOISE_MEASUREMENT))
    262144
    """
    word = 0
    for flag in flags:
        word |= 1 << (flag - 1)
    return np.uint64(word)
