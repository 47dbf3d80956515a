"""Preprocessed k-space files: exact round trip, compressed, refused when damaged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.recon.helpers import fastmri_file, padded
from voxelhub.recon.errors import ReconError
from voxelhub.recon.image import kspace_to_images
from voxelhub.recon.phantom import PhantomAcquisition
from voxelhub.recon.preprocess import preprocess, read_preprocessed, sha256_of, write_preprocessed
from voxelhub.recon.readers import detect_format, read_kspace


@pytest.mark.parametrize("codec", ["gzip", "lzf", "none"])
def test_round_trip_is_exact(tiny: PhantomAcquisition, tmp_path: Path, codec: str) -> None:
    raw = fastmri_file(tmp_path / "knee.h5", padded(tiny.kspace))
    kspace = read_kspace(raw)
    prepared = preprocess(kspace, source_sha256=sha256_of(raw))
    target = tmp_path / "knee.pre.h5"
    sizes = write_preprocessed(target, prepared.kspace, codec=codec)  # type: ignore[arg-type]
    assert detect_format(target) == "preprocessed"
    back = read_kspace(target)
    np.testing.assert_array_equal(back.data, kspace.data)
    np.testing.assert_array_equal(back.sampling.mask, kspace.sampling.mask)
    assert back.sampling.acs == kspace.sampling.acs
    assert back.sampling.acceleration == kspace.sampling.acceleration
    np.testing.assert_array_equal(
        kspace_to_images(back.data, back.header), kspace_to_images(kspace.data, kspace.header)
    )
    assert back.header["provenance"]["raw_sha256"] == sha256_of(raw)
    assert back.header["provenance"]["raw_file"] == "knee.h5"
    assert sizes["raw_bytes"] == kspace.data.nbytes
    if codec != "none":  # the unsampled lines of R = 2 data compress
        assert sizes["stored_bytes"] < (0.8 if codec == "gzip" else 0.98) * sizes["raw_bytes"]


def test_report_says_what_was_found(tiny: PhantomAcquisition) -> None:
    report = preprocess(tiny.kspace).report
    assert report["acceleration"] == 2 and report["acs_lines"] == 12
    assert report["coils"] == 4 and report["slices"] == 2
    assert report["provenance"]["coil_compression"] is None


def test_coil_compression_is_recorded(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    prepared = preprocess(tiny.kspace, virtual_coils=2)
    write_preprocessed(tmp_path / "cc.h5", prepared.kspace)
    back = read_preprocessed(tmp_path / "cc.h5")
    assert back.coils == 2
    assert back.header["provenance"]["coil_compression"]["virtual_coils"] == 2


def test_disagreeing_mask_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    target = tmp_path / "bad.h5"
    write_preprocessed(target, tiny.kspace)
    with h5py.File(target, "r+") as handle:
        del handle["mask"]
        handle.create_dataset("mask", data=np.ones(5, dtype=bool))
    with pytest.raises(ReconError, match="disagree; preprocess the raw file again"):
        read_kspace(target)


def test_other_format_version_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    target = tmp_path / "future.h5"
    write_preprocessed(target, tiny.kspace)
    with h5py.File(target, "r+") as handle:
        handle.attrs["voxelhub_kspace"] = 99
    with pytest.raises(ReconError, match="format version 99"):
        read_kspace(target)


def test_truncated_file_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    target = tmp_path / "cut.h5"
    write_preprocessed(target, tiny.kspace)
    target.write_bytes(target.read_bytes()[:4000])
    with pytest.raises(ReconError, match=r"cut\.h5"):
        read_kspace(target)


def test_only_the_sampled_columns_are_stored(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    kspace = tiny.kspace
    target = tmp_path / "sampled.h5"
    write_preprocessed(target, kspace)
    with h5py.File(target) as handle:
        assert handle["kspace"].shape[-1] == int(kspace.sampling.mask.sum())
    np.testing.assert_array_equal(read_kspace(target).data, kspace.data)


def test_data_on_an_unsampled_column_keeps_every_column(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    kspace = tiny.kspace
    data = kspace.data.copy()
    unsampled = int(np.flatnonzero(~kspace.sampling.mask)[0])
    data[0, 0, 5, unsampled] = 1 + 2j
    target = tmp_path / "odd.h5"
    write_preprocessed(target, replace(kspace, data=data))
    with h5py.File(target) as handle:
        assert handle["kspace"].shape[-1] == data.shape[-1]
    np.testing.assert_array_equal(read_kspace(target).data, data)


def test_format_1_files_are_still_read(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    """Files written before only the sampled columns were kept: every column, no `columns`."""
    kspace = tiny.kspace
    target = tmp_path / "old.h5"
    write_preprocessed(target, kspace)
    with h5py.File(target, "r+") as handle:
        del handle["kspace"], handle["columns"]
        handle.create_dataset("kspace", data=kspace.data, chunks=(1, *kspace.data.shape[1:]))
        handle.attrs["voxelhub_kspace"] = 1
    back = read_kspace(target)
    np.testing.assert_array_equal(back.data, kspace.data)
    assert back.sampling.acs == kspace.sampling.acs


@pytest.mark.parametrize("attribute", ["acs_start", "acceleration", "header"])
def test_missing_or_damaged_attributes_are_refused(
    attribute: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "pre.h5"
    write_preprocessed(path, tiny.kspace)
    with h5py.File(path, "r+") as handle:
        if attribute == "header":
            handle.attrs["header"] = "{not json"
        else:
            del handle.attrs[attribute]
    with pytest.raises(ReconError, match=r"pre.h5: .*missing or damaged.*preprocess the raw"):
        read_preprocessed(path)


def test_a_huge_declared_kspace_is_refused_before_it_is_read(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "pre.h5"
    write_preprocessed(path, tiny.kspace)
    with h5py.File(path, "r+") as handle:  # 11 TiB declared, nothing written
        del handle["kspace"]
        shape = (100_000, 64, 640, 184)
        handle.create_dataset("kspace", shape=shape, dtype=np.complex64, chunks=(1, 1, 640, 184))
    with pytest.raises(ReconError, match=r"pre.h5: kspace \(100000, 64, 640, 184\) needs"):
        read_preprocessed(path)
