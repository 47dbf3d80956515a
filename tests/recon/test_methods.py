from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxelhub.recon import methods
from voxelhub.recon.errors import ReconError
from voxelhub.recon.methods import available_methods, reconstruct, register_method
from voxelhub.recon.model import KSpace, Reconstruction
from voxelhub.recon.phantom import PhantomAcquisition


@pytest.fixture
def registry() -> Iterator[None]:
    saved = dict(methods._REGISTRY)
    yield
    methods._REGISTRY.clear()
    methods._REGISTRY.update(saved)


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
