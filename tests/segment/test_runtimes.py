"""Every runtime agrees with eager PyTorch: Dice ≥ 0.99 between label maps."""

from pathlib import Path

import pytest
import SimpleITK

from tests.segment.conftest import image_of
from voxelhub.segment import SegmentError, load_model
from voxelhub.segment.choose import MIN_DICE, choose_runtime, label_agreement
from voxelhub.segment.engine import representative_patches
from voxelhub.segment.inference import discretize
from voxelhub.segment.synthetic import SyntheticCase


def _labels(model_path: Path, card: Path, runtime: str, ct: SyntheticCase):  # type: ignore[no-untyped-def]
    model = load_model(model_path, card=card, runtime=runtime, threads=2)
    return SimpleITK.GetArrayFromImage(model.predict([image_of(ct)]))


@pytest.mark.parametrize("runtime", ["torchscript", "onnx"])
def test_runtime_agrees_with_eager(
    runtime: str, tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    eager = _labels(*tent_model, "eager", ct)
    other = _labels(*tent_model, runtime, ct)
    assert eager.any()
    assert label_agreement(eager, other) >= MIN_DICE


@pytest.mark.slow
def test_int8_is_close_on_a_quantization_sensitive_network(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    """The hand-made network's logits hinge on differences of 1e-3 (the tent's slope), the
    worst case for int8 activations; int8 stays close, and `choose_runtime` is what keeps
    it from being picked where it misses Dice 0.99 (the U-Net below meets it)."""
    eager = _labels(*tent_model, "eager", ct)
    assert label_agreement(eager, _labels(*tent_model, "int8", ct)) >= 0.95


@pytest.mark.slow
def test_compiled_runtime_agrees_with_eager(spleen_bundle: Path, small_ct: SyntheticCase) -> None:
    """torch.compile (inductor, a C++ build on first use: slow) on the bundle's U-Net."""
    eager = load_model(spleen_bundle, runtime="eager").predict([image_of(small_ct)])
    compiled = load_model(spleen_bundle, runtime="compile").predict([image_of(small_ct)])
    assert (
        label_agreement(SimpleITK.GetArrayFromImage(eager), SimpleITK.GetArrayFromImage(compiled))
        >= MIN_DICE
    )


def test_torchscript_models_refuse_compile(tent_model: tuple[Path, Path]) -> None:
    with pytest.raises(SegmentError, match="cannot run a TorchScript file"):
        load_model(tent_model[0], card=tent_model[1], runtime="compile")


def test_bundle_unet_runtimes_agree_with_eager(
    spleen_bundle: Path, small_ct: SyntheticCase
) -> None:
    """The zoo's U-Net (small channels, random weights) through ONNX, int8 and TorchScript."""
    eager = SimpleITK.GetArrayFromImage(
        load_model(spleen_bundle, runtime="eager").predict([image_of(small_ct)])
    )
    assert 0 < eager.mean() < 1, "a label map with both labels tests agreement"
    for runtime in ("onnx", "torchscript", "int8"):
        other = load_model(spleen_bundle, runtime=runtime).predict([image_of(small_ct)])
        assert label_agreement(eager, SimpleITK.GetArrayFromImage(other)) >= MIN_DICE, runtime


def test_choose_runtime_measures_caches_and_picks_an_agreeing_runtime(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    model = load_model(tent_model[0], card=tent_model[1], runtime="eager")
    engine = model.engine  # type: ignore[attr-defined]
    volume = ct.image[None].astype("float32")
    example = representative_patches((volume + 57) / 221, engine.patch)
    for cached in (False, True):
        choice = choose_runtime(
            engine.source,
            engine.patch,
            discretize=engine._labels,
            example=example,
            candidates=["eager", "torchscript", "onnx", "int8"],
        )
        assert choice.cached is cached
        assert choice.runtime in {"eager", "torchscript", "onnx", "int8"}
        chosen = next(t for t in choice.trials if t.runtime == choice.runtime)
        assert chosen.usable and chosen.dice is not None and chosen.dice >= MIN_DICE
        assert {t.runtime for t in choice.trials} == {"eager", "torchscript", "onnx", "int8"}
    assert list(engine.source.cache_dir.glob("runtime-*.json"))


def test_auto_settles_on_a_measured_runtime(
    tent_model: tuple[Path, Path], ct: SyntheticCase
) -> None:
    model = load_model(tent_model[0], card=tent_model[1], runtime="auto")
    assert model.runtime == "auto"
    labels = model.predict([image_of(ct)])
    assert model.runtime in {"eager", "torchscript", "onnx", "compile", "int8"}
    assert SimpleITK.GetArrayFromImage(labels).max() == 1


def test_discretize_paints_nested_regions_most_specific_last() -> None:
    import numpy as np

    whole = np.zeros((3, 1, 4))
    whole[1, 0, :] = 0.9  # whole tumour everywhere
    whole[0, 0, 1:3] = 0.9  # core inside it
    whole[2, 0, 2] = 0.9  # enhancing inside the core
    assert discretize(whole, "sigmoid", [1, 2, 3]).tolist() == [[2, 1, 3, 2]]


def test_fast_pipeline_gives_the_labels_of_the_bundles_config(
    spleen_bundle: Path, small_ct: SyntheticCase
) -> None:
    """float32 resampling and the fused softmax → invert → argmax against MONAI as configured."""
    from voxelhub.segment.inference import TwoClassPostprocessing

    config = load_model(spleen_bundle, runtime="eager")
    fast = load_model(spleen_bundle, runtime="eager", pipeline="fast")
    assert config.pipeline == "config" and fast.pipeline == "fast"  # type: ignore[attr-defined]
    assert isinstance(fast.postprocessing, TwoClassPostprocessing)  # type: ignore[attr-defined]
    expected = SimpleITK.GetArrayFromImage(config.predict([image_of(small_ct)]))
    got = SimpleITK.GetArrayFromImage(fast.predict([image_of(small_ct)]))
    assert 0 < expected.mean() < 1
    assert label_agreement(expected, got) >= 0.999


def test_optimized_runtimes_default_to_the_fast_pipeline(spleen_bundle: Path) -> None:
    assert load_model(spleen_bundle, runtime="onnx").pipeline == "fast"  # type: ignore[attr-defined]
    assert load_model(spleen_bundle, runtime="auto").pipeline == "fast"  # type: ignore[attr-defined]
    explicit = load_model(spleen_bundle, runtime="onnx", pipeline="config")
    assert explicit.pipeline == "config"  # type: ignore[attr-defined]


def test_fusion_leaves_other_postprocessing_as_configured() -> None:
    from monai.transforms import Activationsd, AsDiscreted, Compose, Identityd, Invertd

    from voxelhub.segment.inference import fused_postprocessing

    invert = Invertd(keys="pred", transform=Compose([]), orig_keys="image", nearest_interp=False)
    sigmoid = Compose(
        [Activationsd(keys="pred", sigmoid=True), invert, AsDiscreted(keys="pred", threshold=0.5)]
    )
    nearest = Compose(
        [
            Activationsd(keys="pred", softmax=True),
            Invertd(keys="pred", transform=Compose([]), orig_keys="image", nearest_interp=True),
            AsDiscreted(keys="pred", argmax=True),
        ]
    )
    fusable = Compose(
        [
            Activationsd(keys="pred", softmax=True),
            invert,
            AsDiscreted(keys="pred", argmax=True),
            Identityd(keys="pred"),
        ]
    )
    assert fused_postprocessing(sigmoid, "pred") is None
    assert fused_postprocessing(nearest, "pred") is None
    assert fused_postprocessing(fusable, "other") is None
    fused = fused_postprocessing(fusable, "pred")
    assert fused is not None and len(fused.after) == 1


def test_compile_leaves_the_source_network_as_it_was(spleen_bundle: Path) -> None:
    """The compiled copy is channels-last; the module eager and the exports use is not."""
    import torch

    from voxelhub.segment.runtimes import build_predictor

    engine = load_model(spleen_bundle, runtime="eager").engine  # type: ignore[attr-defined]
    build_predictor(engine.source, "compile", engine.patch)  # compiles lazily, on first call
    weights = [p for p in engine.source.module.parameters() if p.ndim == 5]
    assert weights and all(p.is_contiguous() for p in weights)
    assert not any(
        p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
        for p in weights
    )
