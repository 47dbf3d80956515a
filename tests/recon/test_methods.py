from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from voxelhub.recon import methods
from voxelhub.recon.errors import ReconError
from voxelhub.recon.methods import available_methods, reconstruct, register_method
from voxelhub.recon.model import KSpace, Reconstruction, Sampling
from voxelhub.recon.phantom import PhantomAcquisition


@pytest.fixture
def registry() -> Iterator[None]:
    saved, without = dict(methods._REGISTRY), set(methods._WITHOUT_CALIBRATION)
    yield
    methods._REGISTRY.clear()
    methods._REGISTRY.update(saved)
    methods._WITHOUT_CALIBRATION.clear()
    methods._WITHOUT_CALIBRATION.update(without)


def test_built_ins_are_listed_first() -> None:
    assert available_methods()[:2] == ("zero-filled", "grappa")


@pytest.mark.parametrize("name", ["zero-filled", "grappa"])
def test_dispatch(name: str, tiny: PhantomAcquisition) -> None:
    result = reconstruct(tiny.kspace, name)
    assert result.method == name
    assert result.images.shape == (2, 64, 48)
    assert result.seconds_per_slice > 0


def test_unknown_method_names_the_known_ones(tiny: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match=r"unknown reconstruction method 'sense'.*grappa"):
        reconstruct(tiny.kspace, "sense")


def test_unknown_setting_lists_the_accepted_ones(tiny: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match=r"grappa does not take \['lamda'\].*kernel, regul"):
        reconstruct(tiny.kspace, "grappa", lamda=0.1)


def test_registered_method_is_dispatched_and_timed(
    tiny: PhantomAcquisition, registry: None
) -> None:
    def echo(kspace: KSpace, *, scale: float = 1.0) -> Reconstruction:
        images = reconstruct(kspace, "zero-filled").images * scale
        return Reconstruction(images=images, method="echo", settings={"scale": scale})

    register_method("echo", echo)
    assert "echo" in available_methods()
    result = reconstruct(tiny.kspace, "echo", scale=2.0)
    assert result.settings == {"scale": 2.0}
    assert result.seconds_per_slice > 0
    with pytest.raises(ValueError, match="already registered"):
        register_method("echo", lambda kspace: result)
    with pytest.raises(ValueError, match="lower-case"):
        register_method("Echo", echo)


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("grappa", {"kernel": "abc"}, "kernel must be tuple"),
        ("grappa", {"kernel": [3.5, 2]}, "kernel must be tuple"),
        ("grappa", {"regularization": "abc"}, "regularization must be float"),
        ("raki", {"iterations": "abc"}, "iterations must be int | None"),
        ("raki", {"learning_rate": [1, 2]}, "learning_rate must be float"),
        ("rraki", {"threads": "x"}, "threads must be int | None"),
    ],
)
def test_setting_of_the_wrong_type_is_refused_before_running(
    method: str, settings: dict[str, object], message: str, tiny: PhantomAcquisition
) -> None:
    if method != "grappa":
        pytest.importorskip("torch")
    with pytest.raises(ReconError, match=message):
        reconstruct(tiny.kspace, method, **settings)


def test_settings_of_the_right_type_are_taken(tiny: PhantomAcquisition) -> None:
    result = reconstruct(tiny.kspace, "grappa", kernel=[3, 2], regularization=1)
    assert result.settings["kernel"] == [3, 2]


def _without_acs(kspace: KSpace) -> KSpace:
    mask = np.zeros(kspace.data.shape[-1], bool)
    mask[::2] = True
    sampling = Sampling(mask=mask, acs=(24, 24), acceleration=2)
    return replace(kspace, data=kspace.data * mask, sampling=sampling)


@pytest.mark.parametrize("name", ["grappa", "raki", "rraki"])
def test_calibrating_methods_refuse_k_space_without_acs(
    name: str, tiny: PhantomAcquisition
) -> None:
    assert methods.needs_calibration(name)
    with pytest.raises(ReconError, match=f"no ACS block.*{name} calibrates"):
        reconstruct(_without_acs(tiny.kspace), name)


def test_methods_that_do_not_calibrate_run_without_acs(
    tiny: PhantomAcquisition, registry: None
) -> None:
    kspace = _without_acs(tiny.kspace)
    assert not methods.needs_calibration("zero-filled")
    assert reconstruct(kspace, "zero-filled").images.shape == (2, 64, 48)

    def plain(kspace: KSpace) -> Reconstruction:
        return Reconstruction(images=np.zeros((1, 2, 2), np.float32), method="plain")

    register_method("plain", plain, calibrates=False)
    assert reconstruct(kspace, "plain").method == "plain"
    register_method("calibrating", plain)  # a method says it needs no ACS, or it needs one
    with pytest.raises(ReconError, match="no ACS block"):
        reconstruct(kspace, "calibrating")
