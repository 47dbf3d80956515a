from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.recon.helpers import edit_header
from voxelhub.recon import ismrmrd_types as mrd
from voxelhub.recon.errors import ReconError
from voxelhub.recon.io_ismrmrd import load_ismrmrd, read_ismrmrd, write_ismrmrd
from voxelhub.recon.model import Sampling
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


@pytest.mark.parametrize(("name", "value"), [("images", np.zeros(4)), ("dataset", 5.0)])
def test_file_of_neither_format_is_refused(name: str, value: object, tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle[name] = value
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


def _append(path: Path, more: np.ndarray) -> None:
    with h5py.File(path, "r+") as handle:
        data = handle["dataset/data"]
        data.resize((len(data) + len(more),))
        data[len(data) - len(more) :] = more


def _records(path: Path) -> np.ndarray:
    with h5py.File(path) as handle:
        return handle["dataset/data"][()]


def _xml(path: Path) -> bytes:
    with h5py.File(path) as handle:
        return bytes(handle[XML][0])


def _rewrite(path: Path, records: np.ndarray) -> None:
    """The file with its header and these acquisitions (a table of another length)."""
    xml = _xml(path)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(XML, data=[xml], dtype=h5py.string_dtype())
        handle.create_dataset("dataset/data", data=records, maxshape=(None,), chunks=True)


@pytest.mark.parametrize(
    "flag",
    [
        mrd.HPFEEDBACK_DATA,
        mrd.RTFEEDBACK_DATA,
        mrd.PHASE_STABILIZATION_REFERENCE,
        mrd.PHASE_STABILIZATION,
    ],
)
def test_feedback_and_phase_stabilisation_scans_are_not_image_lines(
    flag: int, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "pace.h5"
    write_ismrmrd(path, tiny.kspace)
    extra = _records(path)[:3].copy()  # on the centre line, as navigators often are
    extra["head"]["flags"] = mrd.bits(flag)
    extra["head"]["idx"]["kspace_encode_step_1"] = 24
    for index in range(len(extra)):
        extra[index]["data"] = np.full_like(extra[index]["data"], 1000.0)
    _append(path, extra)
    np.testing.assert_array_equal(read_ismrmrd(path).data, tiny.kspace.data)


def test_a_separate_reference_scan_is_calibration_not_image_lines(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    # every other line for the image, centre included; the reference scan (calibration
    # only, another contrast: half the signal) is the block 18-29, on and off that lattice
    full = tiny.fully_sampled
    lattice = np.zeros(48, bool)
    lattice[::2] = True
    path = tmp_path / "separate.h5"
    image = replace(tiny.kspace, data=full * lattice, sampling=Sampling(lattice, (0, 0), 2))
    write_ismrmrd(path, image)
    records = _records(path)
    records["head"]["flags"] = 0  # imaging lines only, none flagged as calibration
    with h5py.File(path, "r+") as handle:
        handle["dataset/data"][...] = records
    slices, lines = np.repeat([0, 1], 12), np.tile(np.arange(18, 30), 2)
    reference = np.concatenate([records[:1]] * 24)
    reference["head"]["flags"] = mrd.bits(mrd.PARALLEL_CALIBRATION)
    reference["head"]["idx"]["slice"] = slices
    reference["head"]["idx"]["kspace_encode_step_1"] = lines
    for index, (slice_index, line) in enumerate(zip(slices, lines, strict=True)):
        samples = np.ascontiguousarray(full[slice_index, :, :, line] / 2)
        reference[index]["data"] = samples.view(np.float32).reshape(-1)
    _append(path, reference)
    kspace = read_ismrmrd(path)
    np.testing.assert_array_equal(kspace.data[..., lattice], full[..., lattice])  # not averaged
    assert not kspace.data[..., ~lattice].any()  # no reference line in the image
    np.testing.assert_array_equal(kspace.sampling.mask, lattice)
    assert kspace.calibration is not None
    np.testing.assert_array_equal(kspace.calibration.lines, np.arange(18, 30))
    np.testing.assert_array_equal(kspace.calibration.data, full[..., 18:30] / 2)
    assert kspace.sampling.acceleration == 2
    assert kspace.sampling.acs == (18, 30)


def test_an_image_lacking_lines_the_others_hold_is_refused(written: Path) -> None:
    _rewrite(written, _records(written)[:-10])  # the scan stopped 10 lines before its end
    with pytest.raises(ReconError, match="slice 1 lacks 10 of the 30 phase-encode lines"):
        read_ismrmrd(written)


def _second_encoding_space(path: Path) -> None:
    """Add an encoding space of 24 lines (0-23) holding 20 acquisitions of slice 0."""
    text = _xml(path).decode()
    start, stop = text.index("<encoding>"), text.index("</encoding>") + len("</encoding>")
    second = (
        text[start:stop]
        .replace("<x>64</x><y>48</y>", "<x>64</x><y>24</y>", 1)
        .replace("<maximum>47</maximum>", "<maximum>23</maximum>")
        .replace("<center>24</center>", "<center>12</center>")
    )
    with h5py.File(path, "r+") as handle:
        handle[XML][0] = (text[:stop] + second + text[stop:]).encode()
    extra = _records(path)[:20].copy()
    extra["head"]["encoding_space_ref"] = 1
    extra["head"]["idx"]["kspace_encode_step_1"] = np.arange(20)
    extra["head"]["idx"]["slice"] = 0
    _append(path, extra)


def test_several_encoding_spaces_are_read_one_at_a_time(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "two_spaces.h5"
    write_ismrmrd(path, tiny.kspace)
    _second_encoding_space(path)
    with pytest.raises(
        ReconError, match=r"2 encoding spaces \(acquisitions per space 0: 60, 1: 20"
    ):
        read_ismrmrd(path)
    np.testing.assert_array_equal(read_ismrmrd(path, encoding_space=0).data, tiny.kspace.data)
    other = read_ismrmrd(path, encoding_space=1, require_acs=False)
    assert other.data.shape == (1, 4, 64, 24)
    assert other.header["encoded_matrix"] == [64, 24, 1]
    with pytest.raises(ReconError, match="no imaging acquisition belongs to encoding space 2"):
        read_ismrmrd(path, encoding_space=2)


def test_acquisitions_of_an_encoding_space_the_header_lacks_are_refused(written: Path) -> None:
    records = _records(written)
    records["head"]["encoding_space_ref"] = 1
    with h5py.File(written, "r+") as handle:
        handle["dataset/data"][...] = records
    with pytest.raises(ReconError, match="describes 1 encoding space"):
        read_ismrmrd(written)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<y>48</y>", "<y>40</y>", "outside the encoded matrix of 40"),
        ("<minimum>0</minimum><maximum>47</maximum>", "<minimum>47</minimum><maximum>0</maximum>",
         "not 0 <= minimum <= maximum"),
    ],
)  # fmt: skip
def test_limits_that_do_not_fit_the_matrix_are_refused_on_reading(
    old: str, new: str, message: str, written: Path
) -> None:
    edit_header(written, old, new, dataset=XML)
    with pytest.raises(ReconError, match=f"meas.h5: .*{message}"):
        read_ismrmrd(written)


def test_noise_scans_of_different_lengths_are_all_used(written: Path) -> None:
    records = _records(written)
    last = int(np.flatnonzero(records["head"]["flags"] & mrd.bits(mrd.NOISE_MEASUREMENT))[-1])
    short = records[last]["data"].view(np.complex64).reshape(4, -1)[:, :100]
    records[last]["data"] = np.ascontiguousarray(short).view(np.float32).reshape(-1)
    records["head"]["number_of_samples"][last] = 100
    _rewrite(written, records)
    loaded = load_ismrmrd(written, prewhiten_noise=True)
    assert loaded.noise.shape == (4, 15 * 256 + 100)
    assert loaded.kspace.header["prewhitened"] is True


def test_unusable_noise_scans_leave_the_data_readable(
    written: Path, tiny: PhantomAcquisition, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(written)
    last = int(np.flatnonzero(records["head"]["flags"] & mrd.bits(mrd.NOISE_MEASUREMENT))[-1])
    records[last]["data"] = records[last]["data"][: 2 * 3 * 256]  # a scan of 3 channels
    records["head"]["active_channels"][last] = 3
    _rewrite(written, records)
    with caplog.at_level(logging.WARNING):
        loaded = load_ismrmrd(written)
    np.testing.assert_array_equal(loaded.kspace.data, tiny.kspace.data)
    assert loaded.noise.size == 0 and "noise scans are unusable" in caplog.text
    with pytest.raises(ReconError, match="noise: acquisitions differ in active_channels"):
        read_ismrmrd(written, prewhiten_noise=True)


def test_a_huge_declared_table_is_refused_before_it_is_read(written: Path) -> None:
    xml, dtype = _xml(written), _records(written).dtype
    with h5py.File(written, "w") as handle:  # 10^10 acquisitions declared, none written
        handle.create_dataset(XML, data=[xml], dtype=h5py.string_dtype())
        handle.create_dataset("dataset/data", shape=(10**10,), dtype=dtype, chunks=(1024,))
    with pytest.raises(ReconError, match=r"10000000000 acquisitions needs 3\.4 TiB of memory"):
        read_ismrmrd(written)


def test_a_huge_declared_readout_is_refused_before_the_grid_is_made(written: Path) -> None:
    edit_header(written, "<x>64</x><y>48</y>", "<x>2000000000</x><y>48</y>", dataset=XML)
    with pytest.raises(ReconError, match=r"k-space \(2, 4, 2000000000, 48\) needs 5\.6 TiB"):
        read_ismrmrd(written)


@pytest.mark.parametrize("first", [0, 12])
def test_partial_fourier_is_not_undersampling(
    first: int, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    # 3/4 partial Fourier: lines 0-11 never acquired; the limits start at 0 or at line 12
    mask = np.zeros(48, bool)
    mask[12::2] = True
    mask[18:30] = True
    path = tmp_path / "partial.h5"
    data = tiny.fully_sampled * mask
    write_ismrmrd(path, replace(tiny.kspace, data=data, sampling=Sampling(mask, (18, 30), 2)))
    edit_header(path, "<minimum>0</minimum>", f"<minimum>{first}</minimum>", dataset=XML)
    kspace = read_ismrmrd(path)
    assert kspace.sampling.acceleration == 2
    assert kspace.sampling.acs[0] + first == 18 and kspace.sampling.acs[1] + first in (30, 31)
    np.testing.assert_array_equal(kspace.data, data[..., first:])
