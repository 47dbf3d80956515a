from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.recon.helpers import edit_header
from voxelhub.recon import ismrmrd_types as mrd
from voxelhub.recon.errors import ReconError
from voxelhub.recon.io_ismrmrd import load_ismrmrd, read_ismrmrd, write_ismrmrd
from voxelhub.recon.noise import noise_covariance, prewhitening_matrix
from voxelhub.recon.phantom import PhantomAcquisition
from voxelhub.recon.readers import detect_format, read_kspace

XML = "dataset/xml"


@pytest.fixture
def written(tiny: PhantomAcquisition, tmp_path: Path) -> Path:
    path = tmp_path / "meas.h5"
    write_ismrmrd(path, tiny.kspace, noise=tiny.noise_scan, reverse_alternate=True)
    return path


def test_round_trip_flips_reversed_lines_and_sets_noise_aside(
    written: Path, tiny: PhantomAcquisition
) -> None:
    with h5py.File(written) as handle:
        heads = handle["dataset/data"]["head"]
        flags = heads["flags"]
        assert np.count_nonzero(flags & mrd.bits(mrd.REVERSE)) > 10
        assert np.count_nonzero(flags & mrd.bits(mrd.NOISE_MEASUREMENT)) == 16
        calibration = mrd.bits(mrd.PARALLEL_CALIBRATION, mrd.PARALLEL_CALIBRATION_AND_IMAGING)
        assert np.count_nonzero(flags & calibration) == 2 * 12
    loaded = load_ismrmrd(written)
    np.testing.assert_array_equal(loaded.kspace.data, tiny.kspace.data)
    np.testing.assert_array_equal(loaded.noise, tiny.noise_scan)
    assert loaded.kspace.sampling.acceleration == 2
    assert loaded.kspace.header["noise_scans"] == 16
    assert loaded.kspace.header["slice_positions_mm"][1][2] == pytest.approx(3.0)
    assert detect_format(written) == "ismrmrd"
    np.testing.assert_array_equal(read_kspace(written).data, tiny.kspace.data)


def test_acquisitions_are_read_in_one_call(written: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = h5py.Dataset.__getitem__

    def counting(self: h5py.Dataset, key: object) -> object:
        calls.append(self.name)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    read_ismrmrd(written)
    assert calls.count("/dataset/data") == 1


def test_prewhitening_decorrelates_the_noise(written: Path, tiny: PhantomAcquisition) -> None:
    plain = load_ismrmrd(written)
    white = load_ismrmrd(written, prewhiten_noise=True)
    assert white.kspace.header["prewhitened"] is True
    assert not np.allclose(white.kspace.data, plain.kspace.data)
    # the same transform applied to the noise gives the identity covariance
    matrix = prewhitening_matrix(noise_covariance(plain.noise))
    np.testing.assert_allclose(noise_covariance(matrix @ plain.noise), np.eye(4), atol=1e-6)
    assert np.abs(noise_covariance(plain.noise) - np.eye(4)).max() > 1e-3


def test_repeated_lines_are_averaged(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = tmp_path / "twice.h5"
    write_ismrmrd(path, tiny.kspace)
    with h5py.File(path, "r+") as handle:
        records = handle["dataset/data"][()]
        extra = records[:1].copy()
        extra["data"][0] = np.zeros_like(extra["data"][0])
        data = handle["dataset/data"]
        data.resize((len(records) + 1,))
        data[len(records)] = extra[0]
    kspace = read_ismrmrd(path)
    slice_index = int(records[0]["head"]["idx"]["slice"])
    line = int(records[0]["head"]["idx"]["kspace_encode_step_1"])
    expected = tiny.kspace.data[slice_index, :, :, line] / 2
    np.testing.assert_allclose(kspace.data[slice_index, :, :, line], expected, rtol=1e-6)


def test_non_cartesian_is_refused(written: Path) -> None:
    with h5py.File(written, "r+") as handle:
        text = handle[XML][0].decode().replace(">cartesian<", ">radial<")
        handle[XML][0] = text.encode()
    with pytest.raises(ReconError, match="only Cartesian"):
        read_ismrmrd(written)


def test_lines_outside_the_encoding_limits_are_refused(written: Path) -> None:
    edit_header(written, "<maximum>47</maximum>", "<maximum>40</maximum>", dataset=XML)
    with pytest.raises(ReconError, match="outside the header's encoding limits"):
        read_ismrmrd(written)


def test_three_d_encoding_is_refused(written: Path) -> None:
    with h5py.File(written, "r+") as handle:
        records = handle["dataset/data"][()]
        records["head"]["idx"]["kspace_encode_step_2"][-1] = 3
        handle["dataset/data"][...] = records
    with pytest.raises(ReconError, match="3-D"):
        read_ismrmrd(written)


def test_file_of_neither_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = np.zeros(4)
    with pytest.raises(ReconError, match=r"no 'kspace' dataset \(fastMRI\) and no /dataset/data"):
        read_kspace(path)


@pytest.mark.parametrize("counter", ["contrast", "repetition", "phase", "set"])
def test_contrasts_and_repetitions_are_images_of_their_own(
    counter: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "two_echoes.h5"
    write_ismrmrd(path, tiny.kspace)
    with h5py.File(path, "r+") as handle:
        records = handle["dataset/data"][()]
        second = records.copy()
        second["head"]["idx"][counter] = 1
        for index in range(len(second)):
            second[index]["data"] = second[index]["data"] * 3  # a later echo, another signal
        data = handle["dataset/data"]
        data.resize((2 * len(records),))
        data[len(records) :] = second
    kspace = read_ismrmrd(path)
    assert kspace.data.shape == (4, *tiny.kspace.data.shape[1:])
    np.testing.assert_allclose(kspace.data[:2], tiny.kspace.data, rtol=1e-6)
    np.testing.assert_allclose(kspace.data[2:], 3 * tiny.kspace.data, rtol=1e-6)
    assert [image[counter] for image in kspace.header["images"]] == [0, 0, 1, 1]
    assert [image["slice"] for image in kspace.header["images"]] == [0, 1, 0, 1]


def test_slices_only_have_no_image_list(written: Path) -> None:
    assert "images" not in read_ismrmrd(written).header


@pytest.mark.parametrize(
    ("damage", "message"),
    [("nan", "noise scans hold 1 NaN"), ("dead", "not positive definite")],
)
def test_unusable_noise_scans_are_refused_when_prewhitening(
    damage: str, message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    noise = tiny.noise_scan.copy()
    if damage == "nan":
        noise[1, 5] = np.nan
    else:
        noise[2] = 0
    path = tmp_path / "noisy.h5"
    write_ismrmrd(path, tiny.kspace, noise=noise)
    with pytest.raises(ReconError, match=f"noisy.h5: .*{message}.*without prewhitening"):
        read_ismrmrd(path, prewhiten_noise=True)
    assert np.isfinite(read_ismrmrd(path).data).all()  # the data themselves are usable


def test_slice_numbers_with_a_gap_give_no_empty_slice(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "gap.h5"
    write_ismrmrd(path, tiny.kspace)
    with h5py.File(path, "r+") as handle:
        records = handle["dataset/data"][()]
        records["head"]["idx"]["slice"] *= 2  # slices 0 and 2 of an interleaved series
        handle["dataset/data"][...] = records
    kspace = read_ismrmrd(path)
    np.testing.assert_array_equal(kspace.data, tiny.kspace.data)


def _discarding(path: Path, source: Path, *, junk: bool) -> Path:
    """`source` with discard_pre/discard_post set (varying by acquisition); the discarded
    samples hold junk, or zeros (the file without the junk)."""
    rng = np.random.default_rng(7)
    with h5py.File(source) as handle:
        xml, records = handle[XML][()], handle["dataset/data"][()]
    heads = records["head"]
    imaging = (heads["flags"] & mrd.bits(mrd.NOISE_MEASUREMENT)) == 0
    heads["discard_pre"][imaging] = 3
    heads["discard_post"][imaging] = np.arange(np.count_nonzero(imaging)) % 3 * 2
    records["head"] = heads
    for record in records[imaging]:
        head = record["head"]
        lines = record["data"].view(np.complex64).reshape(head["active_channels"], -1)
        stop = lines.shape[1] - int(head["discard_post"])
        for part in (slice(0, int(head["discard_pre"])), slice(stop, None)):
            shape = lines[:, part].shape
            lines[:, part] = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) * 1e3 * junk
    with h5py.File(path, "w") as handle:
        handle.create_dataset(XML, data=xml, dtype=h5py.string_dtype())
        handle.create_dataset("dataset/data", data=records, maxshape=(None,), chunks=True)
    return path


def test_discarded_samples_are_not_data(written: Path, tmp_path: Path) -> None:
    clean = read_ismrmrd(_discarding(tmp_path / "clean.h5", written, junk=False))
    dirty = read_ismrmrd(_discarding(tmp_path / "junk.h5", written, junk=True))
    np.testing.assert_array_equal(dirty.data, clean.data)
    assert np.count_nonzero(clean.data[0, 0, :3, 0]) == 0  # first line: 3 samples dropped
    white = read_ismrmrd(tmp_path / "junk.h5", prewhiten_noise=True)
    np.testing.assert_array_equal(white.data == 0, clean.data == 0)


def test_discarding_every_sample_is_refused(written: Path) -> None:
    with h5py.File(written, "r+") as handle:
        records = handle["dataset/data"][()]
        records["head"]["discard_pre"][-1] = 40
        records["head"]["discard_post"][-1] = 30
        handle["dataset/data"][...] = records
    with pytest.raises(ReconError, match="discard_pre 40 and discard_post 30"):
        read_ismrmrd(written)
