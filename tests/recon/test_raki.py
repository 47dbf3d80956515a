from __future__ import annotations

import doctest
import functools
import importlib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from voxelhub.recon import _raki_cnn, _raki_net, _raki_train
from voxelhub.recon.detect import detect_sampling
from voxelhub.recon.errors import ReconError
from voxelhub.recon.grappa import grappa, grappa_kspace
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.methods import reconstruct
from voxelhub.recon.metrics import nmse
from voxelhub.recon.model import Sampling
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate
from voxelhub.recon.raki import FULL_LENGTH, fill, reconstruct_raki
from voxelhub.recon.rraki import fill as rraki_fill
from voxelhub.recon.rraki import reconstruct_rraki
from voxelhub.recon.zerofilled import zero_filled

# Short trainings on one thread keep the module fast and independent of other processes.
FAST: dict[str, Any] = {"iterations": 300, "threads": 1}


@pytest.fixture(scope="module")
def small_r4() -> PhantomAcquisition:
    """1 slice, 8 coils, 96 x 96, R = 4 with 24 ACS lines."""
    spec = PhantomSpec(readout=96, phase_encode=96, acceleration=4, acs_lines=24, snr=40.0)
    return simulate(spec, seed=3)


@pytest.fixture(scope="module")
def tiny_r3() -> PhantomAcquisition:
    """1 slice, 4 coils, 24 x 31 (odd), R = 3 with 11 ACS lines off the sampling grid."""
    spec = PhantomSpec(readout=24, phase_encode=32, coils=4, acceleration=3, acs_lines=12)
    acq = simulate(spec, seed=4)
    mask = np.zeros(31, dtype=bool)
    mask[2::3] = True
    mask[10:21] = True
    data = acq.fully_sampled[..., :31] * mask
    sampling = Sampling(mask=mask, acs=(10, 21), acceleration=3)
    kspace = replace(acq.kspace, data=data, sampling=sampling, header={})
    return replace(acq, kspace=kspace, fully_sampled=acq.fully_sampled[..., :31])


@pytest.fixture(scope="module")
def raki_r4(small_r4: PhantomAcquisition) -> float:
    return nmse(small_r4.reference, reconstruct_raki(small_r4.kspace, **FAST).images)


def test_r3_beats_zero_filled_and_is_close_to_grappa(small_r3: PhantomAcquisition) -> None:
    # Measured: zero-filled 0.026, GRAPPA 0.0047, RAKI 0.0023 (300 iterations; 0.0029 on
    # the ACS block alone).
    error = nmse(small_r3.reference, reconstruct_raki(small_r3.kspace, **FAST).images)
    assert error < 0.25 * nmse(small_r3.reference, zero_filled(small_r3.kspace).images)
    assert error < 1.25 * nmse(small_r3.reference, grappa(small_r3.kspace).images)


def test_r4_beats_zero_filled_and_is_no_worse_than_grappa(
    small_r4: PhantomAcquisition, raki_r4: float
) -> None:
    # Measured: zero-filled 0.035, GRAPPA 0.0096, RAKI 0.0044 (300 iterations; 0.0072 on
    # the ACS block alone).
    assert raki_r4 < 0.4 * nmse(small_r4.reference, zero_filled(small_r4.kspace).images)
    assert raki_r4 < 0.8 * nmse(small_r4.reference, grappa(small_r4.kspace).images)


def test_rraki_beats_grappa_at_r4(small_r4: PhantomAcquisition) -> None:
    # Measured: GRAPPA 0.0096, residual RAKI 0.0055 (0.0050 on the ACS block alone).
    result = reconstruct_rraki(small_r4.kspace, **FAST)
    assert result.method == "rraki"
    assert nmse(small_r4.reference, result.images) < 0.8 * nmse(
        small_r4.reference, grappa(small_r4.kspace).images
    )


def test_rraki_linear_branch_is_our_grappa(small_r4: PhantomAcquisition) -> None:
    """Before any training residual RAKI's linear branch, fitted on the ACS block alone,
    fills the regular gaps exactly as GRAPPA does (the CNN's last layer starts at zero)."""
    kspace = small_r4.kspace
    ours = rraki_fill(
        kspace.data[0], kspace.sampling, iterations=0, training_readout=None, threads=1,
        calibration_extension=0,
    )  # fmt: skip
    theirs = grappa_kspace(kspace.data, kspace.sampling)[0]
    start, stop = kspace.sampling.acs
    lines = np.flatnonzero(kspace.sampling.mask)
    regular = [
        line
        for line in np.flatnonzero(~kspace.sampling.mask)
        if line > lines[0] and (line < start - 4 or line > stop + 4) and line < lines[-1]
    ]
    assert len(regular) > 30
    np.testing.assert_allclose(
        ours[:, 3:-3, regular],
        theirs[:, 3:-3, regular],
        rtol=1e-4,
        atol=1e-4 * np.abs(theirs).max(),
    )


def test_same_seed_same_images_other_seed_other_images(tiny_r3: PhantomAcquisition) -> None:
    kspace = tiny_r3.kspace
    first, again, other = (
        fill(kspace.data[0], kspace.sampling, iterations=20, seed=seed, threads=1)
        for seed in (7, 7, 8)
    )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("residual", [False, True], ids=["raki", "rraki"])
def test_batched_training_is_exactly_separate_training(
    tiny_r3: PhantomAcquisition, residual: bool
) -> None:
    """Two slices x 8 networks trained as one computation end where each network of each
    slice ends when trained alone. In float64 only rounding can differ, and it does in the
    last bits where products have other shapes; Adam's normalised steps carry that to ~1e-8
    of near-zero weights, far below any approximation."""
    data = tiny_r3.fully_sampled[0, :, :, 10:21]
    acs = torch.from_numpy(np.stack([data, 0.5j * data[:, ::-1]]))
    acs = torch.cat([acs.real, acs.imag], dim=1).to(torch.float64)
    channels, training = acs.shape[1], _raki_net.Training(iterations=10, learning_rate=3e-3)

    def trained(slices: slice, outputs: list[int]) -> _raki_net.Weights:
        weights = _raki_net.initial_weights(
            channels, 3, seed=0, outputs=outputs, slices=slices.stop - slices.start,
            residual=residual, dtype=torch.float64, device=torch.device("cpu"),
        )  # fmt: skip
        _raki_net.train(weights, acs[slices], outputs=outputs, training=training)
        return weights

    with _raki_net.runtime(torch.device("cpu"), threads=1):
        batched = trained(slice(0, 2), list(range(channels)))
        for index in range(2):
            for output in range(channels):
                alone = trained(slice(index, index + 1), [output]).network(0, 0)
                for got, want in zip(batched.network(index, output), alone, strict=True):
                    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("residual", [False, True], ids=["raki", "rraki"])
def test_written_out_gradients_are_autograd_gradients(residual: bool) -> None:
    """The hand-written backward pass gives autograd's gradients of the same loss (float64)."""
    generator = torch.Generator().manual_seed(0)
    acs = torch.randn(2, 6, 20, 11, generator=generator, dtype=torch.float64)
    weights = _raki_net.initial_weights(
        6, 3, seed=0, outputs=range(6), slices=2, residual=residual,
        dtype=torch.float64, device=torch.device("cpu"),
    )  # fmt: skip
    if weights.linear is not None:
        with torch.no_grad():
            weights.linear.normal_(generator=generator)
            weights.w3.normal_(generator=generator)
    columns, grid = _raki_cnn.patches(acs, dilation=3), (16, 8)
    wanted = _raki_cnn.targets(acs, range(6), 3)
    kept = (torch.rand(wanted.shape[-2:], generator=generator) > 0.3).double()
    batch = _raki_cnn.Batch(
        columns=columns,
        linear_columns=_raki_train._at_outputs(columns, grid, 3) if residual else None,
        wanted=wanted, loss_weight=kept / kept.sum(), grid=grid, dilation=3, linear_weight=0.5,
    )  # fmt: skip
    squared, grads = _raki_cnn.forward_backward(weights.parameters(), batch)

    cnn, linear = _raki_cnn.forward(weights, columns, grid, dilation=3)
    prediction = cnn if linear is None else cnn + linear
    loss = ((prediction - wanted).square().mean(dim=2) * batch.loss_weight).sum()
    if linear is not None:
        loss = loss + 0.5 * ((linear - wanted).square().mean(dim=2) * batch.loss_weight).sum()
    loss.backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(squared, (prediction - wanted).square().sum(dim=2).detach())
    for parameter, grad in zip(weights.parameters(), grads, strict=True):
        assert parameter.grad is not None
        torch.testing.assert_close(grad, parameter.grad, rtol=1e-12, atol=1e-14)


def test_early_stopping_keeps_each_networks_best_held_out_error() -> None:
    """On pure noise there is nothing to learn: training stops before its last step, and each
    network ends no worse on the held-out positions than where it started."""
    generator = torch.Generator().manual_seed(1)
    acs = torch.randn(1, 6, 40, 12, generator=generator, dtype=torch.float64)
    training = _raki_train.Training(
        iterations=400, learning_rate=1e-2, held_out=0.3, patience=20, seed=3
    )
    weights = _raki_net.initial_weights(
        6, 2, seed=0, outputs=range(6), slices=1, residual=False,
        dtype=torch.float64, device=torch.device("cpu"),
    )  # fmt: skip

    def held_out_errors() -> torch.Tensor:
        wanted = _raki_cnn.targets(acs, range(6), 2)
        held = 1 - _raki_train._held_out_mask(wanted.shape[-2:], training, device=acs.device)
        columns = _raki_cnn.patches(acs, dilation=2)
        with torch.no_grad():
            cnn, _ = _raki_cnn.forward(weights, columns, (36, 10), dilation=2)
        return ((cnn - wanted).square().mean(dim=2) * held).sum(dim=(2, 3))

    before = held_out_errors()
    history = _raki_train.train(weights, acs, outputs=range(6), training=training)
    assert len(history) < training.iterations
    assert torch.all(held_out_errors() <= before)


@pytest.mark.parametrize("residual", [False, True], ids=["raki", "rraki"])
def test_steps_on_the_trained_rows_alone_train_as_on_the_whole_block(residual: bool) -> None:
    """Between checks of the held-out error a step reads only the rows trained on; the
    networks come out as when every step reads the whole block (float64)."""
    generator = torch.Generator().manual_seed(2)
    acs = torch.randn(1, 6, 24, 30, generator=generator, dtype=torch.float64)
    training = _raki_train.Training(
        iterations=40, learning_rate=1e-2, held_out=0.3, check_every=5, readout_batches=2
    )

    def trained(crop: bool) -> list[torch.Tensor]:
        weights = _raki_net.initial_weights(
            6, 3, seed=0, outputs=range(6), slices=1, residual=residual,
            dtype=torch.float64, device=torch.device("cpu"),
        )  # fmt: skip
        build = functools.partial(
            _raki_train._batch, outputs=range(6), basis=None, acceleration=3, residual=residual
        )
        parts = [
            _raki_train._batches(part, build, training, 3)
            for part in _raki_train.readout_parts(acs, 2)
        ]
        assert all(part.trained is not None for part in parts)
        if not crop:
            parts = [replace(part, trained=None) for part in parts]
        parameters = weights.parameters()
        if weights.linear is not None:
            with torch.no_grad():
                weights.linear.normal_(generator=torch.Generator().manual_seed(5))
        _raki_train._optimise(parameters, parts, training=training)
        return [p.detach() for p in parameters]

    cropped = trained(crop=True)
    whole = trained(crop=False)
    for got, want in zip(cropped, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_kept_buffers_do_not_carry_one_step_into_the_next() -> None:
    """A batch's workspace is reused step after step (rows of 16k elements); each step's
    figures are those of a fresh batch."""
    generator = torch.Generator().manual_seed(3)
    acs = torch.randn(1, 4, 13, 17, generator=generator, dtype=torch.float32)
    columns = _raki_cnn.patches(acs, dilation=2)
    grid = (acs.shape[2] - 4, acs.shape[3] - 2)
    wanted = _raki_cnn.targets(acs, range(4), 2)
    fields = {
        "columns": columns, "linear_columns": None, "wanted": wanted,
        "loss_weight": torch.full(wanted.shape[-2:], 1 / wanted[0, 0, 0].numel()),
        "grid": grid, "dilation": 2,
    }  # fmt: skip
    kept = _raki_cnn.Batch(**fields)
    assert grid[0] * grid[1] % _raki_cnn.ROW_ALIGNMENT != 0
    for seed in range(3):
        weights = _raki_net.initial_weights(
            4, 2, seed=seed, outputs=range(4), slices=1, residual=False,
            dtype=torch.float32, device=torch.device("cpu"),
        )  # fmt: skip
        squared, grads = _raki_cnn.forward_backward(weights.parameters(), kept)
        fresh_squared, fresh_grads = _raki_cnn.forward_backward(
            weights.parameters(), _raki_cnn.Batch(**fields)
        )
        torch.testing.assert_close(squared, fresh_squared, rtol=0, atol=0)
        for got, want in zip(grads, fresh_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_principal_features_keep_the_filters_in_their_span(small_r4: PhantomAcquisition) -> None:
    kspace = small_r4.kspace
    data = kspace.data[0][None]
    start, stop = kspace.sampling.acs
    inputs = torch.from_numpy(np.concatenate([data.real, data.imag], axis=1))
    acs = inputs[..., start:stop] / inputs[..., start:stop].abs().max()
    weights = _raki_net.initial_weights(
        16, 4, seed=0, outputs=range(16), slices=1, residual=False,
        dtype=torch.float32, device=torch.device("cpu"),
    )  # fmt: skip
    training = _raki_train.Training(iterations=5, learning_rate=1e-2, features=24)
    _raki_train.train(weights, acs, outputs=range(16), training=training)
    assert weights.w1.shape == (1, 16 * 32, 160)
    assert int(torch.linalg.matrix_rank(weights.w1[0].detach(), rtol=1e-4)) == 24
    columns = _raki_cnn.patches(acs, dilation=4)
    grid = (acs.shape[2] - 4, acs.shape[3] - 4)
    with torch.no_grad():
        factored, _ = _raki_cnn.forward(weights, columns, grid, dilation=4, rank=24)
        full, _ = _raki_cnn.forward(weights, columns, grid, dilation=4)
    torch.testing.assert_close(factored, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_acquired_lines_are_kept_and_all_others_filled(tiny_r3: PhantomAcquisition) -> None:
    kspace = tiny_r3.kspace
    mask = kspace.sampling.mask
    filled = fill(kspace.data[0], kspace.sampling, iterations=20, threads=1)
    np.testing.assert_array_equal(filled[..., mask], kspace.data[0][..., mask])
    # Lines 0 and 1 precede the first grid line; 30 follows the last one.
    assert np.all(np.abs(filled[..., ~mask]).sum(axis=(0, 1)) > 0)


def test_acs_off_the_grid_reconstructs_well() -> None:
    spec = PhantomSpec(readout=64, phase_encode=64, coils=8, acceleration=3, acs_lines=20)
    acq = simulate(spec, seed=5)
    sampling = equispaced_mask(64, 3, acs_lines=19, offset=1)
    kspace = replace(acq.kspace, data=acq.fully_sampled * sampling.mask, sampling=sampling)
    assert _raki_net.grid_phase(sampling) == 1 != sampling.acs[0] % 3
    error = nmse(acq.reference, reconstruct_raki(kspace, iterations=200, threads=1).images)
    assert error < 0.25 * nmse(acq.reference, zero_filled(kspace).images)


def test_fully_sampled_and_r1_are_returned_unchanged(tiny_r3: PhantomAcquisition) -> None:
    full = tiny_r3.fully_sampled[0]
    everything = Sampling(mask=np.ones(31, dtype=bool), acs=(0, 31), acceleration=1)
    np.testing.assert_array_equal(fill(full, everything), full)


def test_settings_are_recorded_and_registered(tiny_r3: PhantomAcquisition) -> None:
    result = reconstruct(tiny_r3.kspace, "rraki", iterations=3, seed=2, threads=1, device="cpu")
    assert result.images.shape == (1, 24, 31)
    assert result.images.dtype == np.float32
    assert result.settings == {
        "iterations": 3, "learning_rate": 1e-2, "seed": 2, "device": "cpu",
        "slices_per_batch": None, "training_readout": 96,
        "precision": result.settings["precision"], "threads": 1,
        "linear_learning_rate": 0.0, "linear_weight": 0.0, "linear_regularization": 0.1,
        "schedule": "cosine", "held_out": 0.0, "patience": 40, "features": None,
        "irregular_gaps": "grappa", "calibration_extension": 20, "readout_batches": 2,
        "acceleration": 3, "acs_lines": 11,
    }  # fmt: skip
    assert result.settings["precision"] in {"float32", "bfloat16"}
    assert (
        "linear_weight" not in reconstruct(tiny_r3.kspace, "raki", iterations=1, threads=1).settings
    )


def test_training_window_is_narrower_on_a_cpu_computing_in_float32(
    tiny_r3: PhantomAcquisition,
) -> None:
    """'auto' trains on 128 readout points, 96 where the CPU computes in float32; the
    reconstruction records the number it used."""
    options = _raki_net.Options(iterations=1, learning_rate=1e-2, training_readout="auto")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert options.resolved_training_readout(cpu, "float32") == 96
    assert options.resolved_training_readout(cpu, "bfloat16") == 128
    assert options.resolved_training_readout(gpu, "float32") == 128
    assert replace(options, training_readout=64).resolved_training_readout(cpu, "float32") == 64
    assert replace(options, training_readout=None).resolved_training_readout(cpu, "float32") is None
    for precision, width in (("float32", 96), ("bfloat16", 128)):
        settings = reconstruct_raki(
            tiny_r3.kspace, iterations=1, threads=1, device="cpu", precision=precision
        ).settings
        assert settings["training_readout"] == width
    with pytest.raises(ReconError, match="training_readout must be a number"):
        fill(tiny_r3.kspace.data[0], tiny_r3.kspace.sampling, training_readout="wide")


def test_rows_are_held_out_from_r5_on_and_steps_follow_unless_set() -> None:
    options = _raki_net.Options(iterations=None, learning_rate=1e-2)
    acs_only = replace(options, calibration_extension=0)
    rates = (1, 2, 4, 5, 6)

    def by_rate(chosen: _raki_net.Options, setting: str, residual: bool) -> list[Any]:
        resolve = getattr(chosen, f"resolved_{setting}")
        if setting != "iterations":
            return [resolve(r, residual=residual) for r in rates]
        held = by_rate(chosen, "held_out", residual)
        return [resolve(h, r, residual=residual) for h, r in zip(held, rates, strict=True)]

    # R = 2 trains on the ACS block alone, on 128 components, from R = 3 on a widened one.
    expected = {
        (options, "extension", False): [0, 0, 20, 20, 20],
        (options, "extension", True): [0, 0, 20, 20, 20],
        (options, "held_out", False): [0, 0, 0, 0.2, 0.2],
        (options, "held_out", True): [0, 0, 0, 0.2, 0.2],
        (options, "features", False): [128, 128, None, None, None],
        (options, "features", True): [128, 128, None, None, None],
        (options, "iterations", False): [1000, 1000, 400, 200, 200],
        (options, "iterations", True): [1000, 1000, 200, 200, 200],
        (acs_only, "held_out", False): [0, 0, 0, 0.1, 0.1],
        (acs_only, "held_out", True): [0, 0, 0, 0.35, 0.35],
        (acs_only, "features", False): [128, 128, 64, 64, 64],
        (acs_only, "features", True): [128, 128, None, None, None],
    }
    assert {key: by_rate(*key) for key in expected} == expected
    assert replace(options, features=32).resolved_features(4, residual=False) == 32
    chosen = replace(options, held_out=0.3, iterations=7)
    assert chosen.resolved_held_out(2, residual=False) == 0.3
    assert chosen.resolved_iterations(0.3, 2, residual=False) == 7


@pytest.mark.parametrize("name", ["raki", "rraki"])
def test_full_length_is_the_papers_training(tiny_r3: PhantomAcquisition, name: str) -> None:
    settings = {**FULL_LENGTH, "iterations": 2, "threads": 1, "device": "cpu"}
    recorded = reconstruct(tiny_r3.kspace, name, **settings).settings
    assert {key: recorded[key] for key in settings} == settings


def test_unknown_schedule_is_refused(tiny_r3: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match="schedule must be one of cosine, constant"):
        fill(tiny_r3.kspace.data[0], tiny_r3.kspace.sampling, schedule="linear")


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        (Sampling(np.ones(30, dtype=bool), (0, 30), 3), "one entry per line"),
        (Sampling(np.ones(31, dtype=bool), (12, 18), 3), r"2R\+1 = 7 ACS lines"),
        (Sampling(np.zeros(31, dtype=bool), (10, 21), 3), "not a fully sampled range"),
    ],
)
def test_unusable_sampling_is_refused(
    tiny_r3: PhantomAcquisition, sampling: Sampling, message: str
) -> None:
    with pytest.raises(ReconError, match=message):
        fill(tiny_r3.kspace.data[0], sampling)


def test_nan_is_refused(tiny_r3: PhantomAcquisition) -> None:
    data = tiny_r3.kspace.data[0].copy()
    data[0, 0, 12] = np.nan
    with pytest.raises(ReconError, match="NaN"):
        fill(data, tiny_r3.kspace.sampling)


def test_slices_trained_together_match_slices_trained_apart(tiny: PhantomAcquisition) -> None:
    kspace = tiny.kspace

    def filled(slices_per_batch: int) -> np.ndarray:
        options = _raki_net.Options(
            iterations=20, learning_rate=1e-2, slices_per_batch=slices_per_batch,
            precision="float32", threads=1,
        )  # fmt: skip
        return _raki_net.fill(kspace.data, kspace.sampling, options=options, residual=False)

    together, apart = filled(2), filled(1)
    np.testing.assert_allclose(together, apart, rtol=1e-4, atol=1e-6 * np.abs(apart).max())


@pytest.mark.parametrize("name", ["_raki_net", "raki", "rraki"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"voxelhub.recon.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_slices_per_batch_is_asked_or_one_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert _raki_net.slices_per_batch(None, cpu, 10**6) == 1
    assert _raki_net.slices_per_batch(5, cpu, 10**6) == 5
    with pytest.raises(ReconError, match="slices_per_batch must be at least 1"):
        _raki_net.slices_per_batch(0, cpu, 10**6)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        free, _ = torch.cuda.mem_get_info(gpu)
        assert _raki_net.slices_per_batch(None, gpu, 1) == _raki_net.MOST_SLICES_PER_BATCH
        assert _raki_net.slices_per_batch(None, gpu, free) == 1


def test_batches_out_of_gpu_memory_are_run_again_in_halves() -> None:
    calls: list[tuple[int, int]] = []

    def run(first: int, stop: int) -> torch.Tensor:
        calls.append((first, stop))
        if stop - first > 3:  # as a GPU that has room for three slices only
            raise torch.OutOfMemoryError("CUDA out of memory")
        return torch.arange(first, stop)

    done = list(_raki_net.in_batches(10, 8, run))
    assert [first for first, _ in done] == [0, 2, 4, 6, 8]
    assert torch.cat([batch for _, batch in done]).tolist() == list(range(10))
    assert calls[:3] == [(0, 8), (0, 4), (0, 2)]

    def never(first: int, stop: int) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ReconError, match="out of memory reconstructing a single slice"):
        list(_raki_net.in_batches(4, 4, never))


@pytest.fixture(scope="module")
def small_r5() -> PhantomAcquisition:
    spec = PhantomSpec(readout=48, phase_encode=64, coils=6, acceleration=5, acs_lines=16)
    return simulate(spec, seed=4)


@pytest.mark.parametrize("extension", [0, 6, 40])
def test_calibration_block_is_the_acs_widened_by_grappa(
    small_r5: PhantomAcquisition, extension: int
) -> None:
    kspace = small_r5.kspace
    sampling, data = kspace.sampling, kspace.data
    start, stop = sampling.acs
    block = _raki_net.calibration_block(
        torch.from_numpy(data), sampling, extension=extension, regularization=0.1
    ).numpy()
    first, last = max(start - extension, 0), min(stop + extension, data.shape[-1])
    assert block.shape == (*data.shape[:-1], last - first)
    # Acquired lines (the ACS block and the grid lines beside it) are the measured ones.
    acquired = np.flatnonzero(sampling.mask[first:last])
    np.testing.assert_array_equal(block[..., acquired], data[..., first + acquired])
    # The others are GRAPPA's, with the same kernel and lambda.
    missing = np.flatnonzero(~sampling.mask[first:last])
    assert (missing.size > 0) == (extension > 0)
    expected = grappa_kspace(data, sampling, kernel=(5, 2), regularization=0.1)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        block[..., missing], expected[..., first + missing], rtol=0, atol=1e-5 * scale
    )


@pytest.mark.parametrize("name", ["raki", "rraki"])
def test_the_widened_block_is_the_default_and_recorded(
    small_r5: PhantomAcquisition, name: str
) -> None:
    result = reconstruct(small_r5.kspace, name, iterations=5, threads=1, device="cpu")
    assert result.settings["calibration_extension"] == 20
    assert result.settings["held_out"] == 0.2
    assert result.settings["features"] is None
    acs_only = reconstruct(
        small_r5.kspace, name, iterations=5, threads=1, device="cpu", calibration_extension=0
    )
    assert acs_only.settings["held_out"] == (0.35 if name == "rraki" else 0.1)
    assert acs_only.settings["features"] == (None if name == "rraki" else 64)
    assert not np.array_equal(result.images, acs_only.images)


def test_unknown_features_is_refused(small_r5: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match="features must be a number of components"):
        reconstruct_raki(small_r5.kspace, iterations=1, features="many")


def test_negative_calibration_extension_is_refused(small_r5: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match="calibration_extension must be 0 or more lines"):
        reconstruct_rraki(small_r5.kspace, iterations=1, calibration_extension=-1)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_readout_parts_tile_the_training_targets(count: int) -> None:
    block = torch.randn(2, 6, 40, 30, dtype=torch.float64)
    parts = _raki_train.readout_parts(block, count)
    assert len(parts) == count
    whole = _raki_cnn.targets(block, range(6), 3)
    pieces = [_raki_cnn.targets(part, range(6), 3) for part in parts]
    # Every target of the whole block is trained on in exactly one part.
    torch.testing.assert_close(torch.cat(pieces, dim=3), whole, rtol=0, atol=0)


def test_readout_batches_are_two_on_the_cpu_without_held_out_rows(
    small_r5: PhantomAcquisition, tiny_r3: PhantomAcquisition
) -> None:
    below = reconstruct(tiny_r3.kspace, "raki", iterations=2, threads=1, device="cpu")
    assert below.settings["readout_batches"] == 2
    held = reconstruct(small_r5.kspace, "raki", iterations=2, threads=1, device="cpu")
    assert held.settings["held_out"] > 0
    assert held.settings["readout_batches"] == 1
    whole = reconstruct(
        tiny_r3.kspace, "raki", iterations=2, threads=1, device="cpu", readout_batches=1
    )
    assert whole.settings["readout_batches"] == 1
    assert not np.array_equal(whole.images, below.images)
    with pytest.raises(ReconError, match="readout_batches must be 1 or more"):
        reconstruct_raki(tiny_r3.kspace, iterations=1, readout_batches=0)


@pytest.mark.parametrize("method", ["raki", "rraki"])
def test_random_mask_is_filled_not_returned_zero_filled(method: str) -> None:
    acq = simulate(PhantomSpec(readout=32, phase_encode=64, coils=4, acs_lines=12), seed=1)
    mask = np.zeros(64, bool)
    mask[[2, 9, 16, 18, 19, 21, 39, 43, 48, 52, 54, 55, 60, 61]] = True
    mask[26:38] = True
    data = acq.fully_sampled * mask
    kspace = replace(acq.kspace, data=data, sampling=detect_sampling(data))
    images = reconstruct(kspace, method, iterations=20, threads=1).images
    assert not np.allclose(images, zero_filled(kspace).images)
