from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.recon.helpers import edit_header, fastmri_file, padded
from voxelhub.recon.errors import ReconError
from voxelhub.recon.header import format_header, parse_header
from voxelhub.recon.io_fastmri import read_fastmri, read_reference, write_fastmri
from voxelhub.recon.model import Sampling
from voxelhub.recon.phantom import PhantomAcquisition


def test_round_trip_strips_padding(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = tmp_path / "knee.h5"
    write_fastmri(path, padded(tiny.kspace, 20), reference=tiny.reference)
    with h5py.File(path) as handle:  # what fastMRI's own loaders see
        assert handle["kspace"].shape == (2, 4, 64, 68)
        assert handle["kspace"].dtype == np.complex64
        assert not np.any(handle["kspace"][..., :10]) and not np.any(handle["kspace"][..., -10:])
        assert handle.attrs["acceleration"] == 2
        assert b"ismrmrdHeader" in handle["ismrmrd_header"][()]
    back = read_fastmri(path)
    np.testing.assert_array_equal(back.data, tiny.kspace.data)
    assert back.sampling.acceleration == 2
    assert back.sampling.acs[0] <= tiny.kspace.sampling.acs[0]
    assert back.sampling.acs[1] >= tiny.kspace.sampling.acs[1]
    assert back.header["encoded_matrix"] == [64, 68, 1]
    assert back.header["acceleration_hint"] == 2
    np.testing.assert_array_equal(read_reference(path), tiny.reference)


def test_fully_sampled_file_without_mask(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    full = replace(
        tiny.kspace,
        data=tiny.fully_sampled,
        sampling=Sampling(mask=np.ones(48, bool), acs=(0, 48), acceleration=1),
    )
    back = read_fastmri(fastmri_file(tmp_path / "full.h5", full))
    assert back.sampling.acceleration == 1
    assert back.sampling.mask.all()
    assert read_reference(tmp_path / "full.h5") is None


def test_single_coil_file_gets_a_coil_axis(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = tmp_path / "single.h5"
    with h5py.File(path, "w") as handle:
        handle["kspace"] = tiny.kspace.data[:, 0]
        handle["ismrmrd_header"] = np.bytes_(format_header(tiny.kspace.header).encode())
    assert read_fastmri(path).data.shape == (2, 1, 64, 48)


def test_header_round_trip(tiny: PhantomAcquisition) -> None:
    header = parse_header(format_header(tiny.kspace.header, coils=4, slices=2))
    for key in ("encoded_matrix", "recon_matrix", "pe_limits", "trajectory", "echo_time_ms"):
        assert header[key] == tiny.kspace.header[key]


def test_missing_kspace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as handle:
        handle["something_else"] = np.zeros(3)
    with pytest.raises(ReconError, match="no 'kspace' dataset"):
        read_fastmri(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_refused(damage: str, tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "bad.h5", tiny.kspace)
    content = path.read_bytes()
    path.write_bytes(b"not hdf5 at all" * 100 if damage == "garbage" else content[:2000])
    with pytest.raises(ReconError, match="HDF5"):
        read_fastmri(path)


def test_nans_are_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "nan.h5", tiny.kspace)
    with h5py.File(path, "r+") as handle:
        handle["kspace"][0, 0, 3, 24] = np.nan
    with pytest.raises(ReconError, match="NaN"):
        read_fastmri(path)


def test_shape_disagreeing_with_header_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "shape.h5", tiny.kspace)
    edit_header(path, "<x>64</x><y>48</y>", "<x>64</x><y>52</y>")
    with pytest.raises(ReconError, match="header and data disagree"):
        read_fastmri(path)


def test_limits_outside_the_matrix_are_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "limits.h5", tiny.kspace)
    edit_header(path, "<maximum>47</maximum>", "<maximum>59</maximum>")
    with pytest.raises(ReconError, match=r"limits.h5: .*does not match the data"):
        read_fastmri(path)


def test_inverted_limits_are_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "inverted.h5", tiny.kspace)
    edit_header(
        path,
        "<minimum>0</minimum><maximum>47</maximum>",
        "<minimum>47</minimum><maximum>0</maximum>",
    )
    with pytest.raises(ReconError, match=r"inverted.h5: .*not 0 <= minimum <= maximum"):
        read_fastmri(path)


def test_non_cartesian_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "radial.h5", tiny.kspace)
    edit_header(path, "<trajectory>cartesian</trajectory>", "<trajectory>radial</trajectory>")
    with pytest.raises(ReconError, match="only Cartesian"):
        read_fastmri(path)


def test_missing_acs_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "noacs.h5", tiny.kspace)
    with h5py.File(path, "r+") as handle:
        mask = np.zeros(48, bool)
        mask[::2] = True
        handle["kspace"][...] = handle["kspace"][()] * mask
        handle["mask"][...] = mask
    with pytest.raises(ReconError, match="no ACS block"):
        read_fastmri(path)


def test_invalid_xml_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "xml.h5", tiny.kspace)
    edit_header(path, "</ismrmrdHeader>", "")
    with pytest.raises(ReconError, match="not valid XML"):
        read_fastmri(path)


@pytest.mark.parametrize("value", ["four", np.array([4, 8]), np.nan])
def test_unusable_hint_attribute_is_ignored(
    value: object, tiny: PhantomAcquisition, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = fastmri_file(tmp_path / "hint.h5", tiny.kspace)
    with h5py.File(path, "r+") as handle:
        handle.attrs["acceleration"] = value
    back = read_fastmri(path)
    assert back.sampling.acceleration == 2
    assert "acceleration_hint" not in back.header
    assert back.header["num_low_frequency_hint"] == tiny.kspace.sampling.acs_lines
    assert "ignoring the attribute acceleration" in caplog.text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<x>64</x><y>48</y>", "<x>64</x><y>4B</y>", r"matrixSize.y is '4B', not a number"),
        ("<center>24</center>", "<center>x</center>", r"center is 'x', not a number"),
        ("<TE>30.0</TE>", "<TE>thirty</TE>", r"TE is 'thirty', not a number"),
        ("<reconSpace><matrixSize><x>64</x><y>48</y>",
         "<reconSpace><matrixSize><x>0</x><y>0</y>", "must be 1 or more"),
    ],
)  # fmt: skip
def test_damaged_header_values_are_refused_naming_the_file(
    old: str, new: str, message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = fastmri_file(tmp_path / "values.h5", tiny.kspace)
    edit_header(path, old, new)
    with pytest.raises(ReconError, match=f"values.h5: .*{message}"):
        read_fastmri(path)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("real_imag", r"last axis of 2 looks like real and imaginary parts"),
        ("magnitude", r"store the complex64 samples"),
    ],
)
def test_real_valued_kspace_is_refused_saying_how_to_store_it(
    layout: str, message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    data = tiny.kspace.data
    values = np.stack((data.real, data.imag), axis=-1) if layout == "real_imag" else np.abs(data)
    path = tmp_path / "real.h5"
    with h5py.File(path, "w") as handle:
        handle["kspace"] = values.astype(np.float32)
    with pytest.raises(ReconError, match=f"real.h5: 'kspace' must be complex.*{message}"):
        read_fastmri(path)


def test_padding_is_cut_by_the_header_even_when_not_zero(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "noisy_padding.h5"
    write_fastmri(path, padded(tiny.kspace, 20))
    with h5py.File(path, "r+") as handle:
        del handle["mask"]  # the sampling comes from the data
        kspace = handle["kspace"][()]
        rng = np.random.default_rng(0)
        kspace[..., :10] = 1e-9 * rng.standard_normal(kspace[..., :10].shape)
        kspace[..., -10:] = 1e-9
        handle["kspace"][...] = kspace
    back = read_fastmri(path)
    np.testing.assert_array_equal(back.data, tiny.kspace.data)
    np.testing.assert_array_equal(back.sampling.mask, tiny.kspace.sampling.mask)
    assert back.sampling.acceleration == 2


def test_an_empty_slice_is_refused(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    path = fastmri_file(tmp_path / "stopped.h5", tiny.kspace)
    with h5py.File(path, "r+") as handle:
        handle["kspace"][1] = 0
    with pytest.raises(ReconError, match=r"stopped.h5: slice\(s\) 1 of 2 hold no data"):
        read_fastmri(path)


def test_a_huge_declared_kspace_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as handle:  # 11 TiB declared, nothing written: a few kB on disk
        shape = (100_000, 64, 640, 368)
        handle.create_dataset("kspace", shape=shape, dtype=np.complex64, chunks=(1, 1, 640, 368))
    with pytest.raises(ReconError, match=r"huge.h5: 'kspace' .* needs 21\.9 TiB of memory"):
        read_fastmri(path)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ("null", "it holds no data"),
        ("fields", r"store kspace\['real'\] \+ 1j \* kspace\['imag'\] as complex64"),
    ],
)
def test_kspace_without_complex_samples_is_refused_saying_why(
    write: str, message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as handle:
        if write == "null":
            handle.create_dataset("kspace", data=h5py.Empty("c8"))
        else:  # as MATLAB and others write complex numbers
            parts = np.empty(tiny.kspace.data.shape, [("real", "<f4"), ("imag", "<f4")])
            parts["real"], parts["imag"] = tiny.kspace.data.real, tiny.kspace.data.imag
            handle["kspace"] = parts
    with pytest.raises(ReconError, match=f"odd.h5: 'kspace' must be complex.*{message}"):
        read_fastmri(path)
