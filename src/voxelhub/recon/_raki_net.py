"""RAKI and residual RAKI reconstruction: the options, the sampling checks, filling k-space.

Per batch of slices the k-space is scaled (largest ACS magnitude 1), the networks of every
output channel of every slice are trained together on the ACS block (`_raki_train`), applied
to the acquired grid lines as one convolution over the whole k-space (`_raki_cnn`), and the
acquired lines put back as measured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from voxelhub.recon._grappa_batch import fill_groups
from voxelhub.recon._raki_cnn import KERNEL_1, MARGIN, Weights, forward, initial_weights, patches
from voxelhub.recon._raki_train import Training, grappa_branch, train
from voxelhub.recon.errors import ReconError
from voxelhub.recon.gaps import gap_groups
from voxelhub.recon.grappa import irregular_groups
from voxelhub.recon.header import pe_offset, recon_shape
from voxelhub.recon.image import kspace_to_images
from voxelhub.recon.model import ComplexArray, FloatArray, KSpace, Reconstruction, Sampling

logger = logging.getLogger(__name__)

__all__ = ["Options", "Training", "Weights", "fill", "initial_weights", "reconstruct", "train"]

# Residual RAKI's linear branch starts as our GRAPPA kernel and stays so by default: Adam's
# steps, about the learning rate in size whatever the gradient, only move it away from that
# fit (at R = 6 the real-valued refit amplifies noise, NMSE 0.035 against GRAPPA's 0.019).
LINEAR_RATE_FACTOR = 0.0
SCHEDULES = ("cosine", "constant")
# Lines whose nearest acquired lines are not R apart (beside an ACS block off the grid, at
# the k-space edges) have acquired neighbours closer than the networks' grid lines; a GRAPPA
# kernel of their own geometry uses them. On the 15-coil phantom at R = 5 (ACS lines 148-171,
# grid 0, 5, ...) the four lines beside the ACS were a tenth of residual RAKI's error from
# the grid alone: NMSE 0.0163 with them from the grid, 0.0151 (GRAPPA's) with GRAPPA there.
IRREGULAR_GAPS = ("grappa", "network")
# Early stopping pays only where the networks fit noise. On the 15-coil phantom with 24 ACS
# lines (seed 0) holding out outer ACS rows cost accuracy up to R = 4, where those rows are
# more use as training data (RAKI at R = 4: NMSE 0.0154 with a tenth held out, 0.0139
# without), and kept it from R = 5 on (RAKI at R = 6 without: 0.037, with: 0.026). There
# RAKI does best with a tenth held out, residual RAKI with more (at R = 5 0.016 with a fifth
# against 0.025 with a tenth: it starts from GRAPPA and must stop before it fits the noise).
# At R = 6 (seed 1, 3 slices) a fifth still let the CNN branch fit the noise, NMSE 0.0184,
# 0.0193, 0.0203 against GRAPPA's 0.0180, 0.0189, 0.0186; with 0.35 held out every network
# keeps its GRAPPA start there (0.0180, 0.0189, 0.0186).
HELD_OUT_FROM_ACCELERATION = 5
HELD_OUT_RAKI = 0.1
HELD_OUT_RESIDUAL = 0.35
# 24 ACS lines are few rows to train on: from R = 5 on both networks fitted their noise, and
# early stopping kept residual RAKI's CNN at its zero start (the GRAPPA reconstruction) and
# left RAKI 25-40 % behind GRAPPA; below R = 5 RAKI trailed GRAPPA too (R = 4: NMSE .0123
# against .0101). So the block the networks (and residual RAKI's linear branch) train on is
# widened by `CALIBRATION_EXTENSION` lines on each side, filled by GRAPPA around the acquired
# grid lines, as iterative RAKI widens its training data with a first reconstruction.
# Patches there whose target is an acquired grid line teach the networks from data outside
# the ACS; those whose target is a GRAPPA line hold them near GRAPPA. From R = 5 a fifth of
# the widened block's rows, its outermost (GRAPPA-filled) ones, is held out. Layer 1 learns
# on every patch component there: on 64 principal components RAKI got only NMSE / SSIM
# .0162 / .7316 at R = 5 (all: .0142 / .7641) and .0096 / .7980 at R = 4 (all: .0081 /
# .8293). One slice of the 15-coil 640 x 320 phantom (SNR 40, 24 ACS lines, seed 1), NMSE /
# SSIM, ACS block alone -> widened, against GRAPPA:
#   R = 3  RAKI .00442 / .8918 -> .00327 / .9039, rRAKI .00351 / .8999 -> .00313 / .9026
#          (GRAPPA .00435 / .8986)
#   R = 4  RAKI .01231 / .7943 -> .00808 / .8293, rRAKI .00994 / .8171 -> .00796 / .8281
#          (GRAPPA .01010 / .8233)
#   R = 5  RAKI .0194 / .7314 -> .01421 / .7641, rRAKI .01511 / .7689 -> .01479 / .7705
#          (GRAPPA .01511 / .7689)
#   R = 6  RAKI .0259 / .6396 -> .01839 / .7165, rRAKI .01882 / .7249 -> .01843 / .7251
#          (GRAPPA .01885 / .7234)
# From R = 5 residual RAKI's gain is nearly all its linear branch's, fitted on the widened
# block (with the CNN untrained: .01485 / .7702 at R = 5, .01843 / .7251 at R = 6); on
# phantom seeds 2 and 3 it beat GRAPPA at R = 5-6 by 2-5 % too. Without held-out rows from
# R = 5 the NMSE fell further but the SSIM too (RAKI at R = 6: .01824 / .7007). The cost on
# 2 CPU cores: RAKI 21-35 s a slice below R = 5 (400 steps on the larger block) instead of
# 5-6 s, 15 s from R = 5; residual RAKI 15-17 s below R = 5, 4-5 s from R = 5 (12-13 s and
# 3 s on the 96 readout points it uses by default, `rraki.DEFAULT_TRAINING_READOUT`). With
# `training_readout` 64, RAKI at R = 4 took 15.5 s for .00961 / .8189.
CALIBRATION_EXTENSION = 20
HELD_OUT_EXTENDED = 0.2
# Principal components layer 1 learns on, with `features` "auto", on the ACS block alone.
FEATURES_ACS = 64
# At R = 2 the ACS block is training data enough, and GRAPPA's lines in a widened block only
# pull the networks towards GRAPPA's error: below `WIDENED_FROM_ACCELERATION` both networks
# train on the ACS block alone, `ITERATIONS_ACS_ALONE` steps on its `FEATURES_ACS_ALONE`
# leading principal components (the block is a third of the widened one's size, so a step
# costs a third). The paper's training (`raki.FULL_LENGTH`, 1000 constant steps on every
# component) had been 7-8 % better in NMSE than the widened defaults there. NMSE / SSIM and
# seconds a slice on 2 cores with bfloat16, 15-coil 640 x 320 phantom, one slice, R = 2:
#   24 ACS lines, seed 1: RAKI widened .001024 / .9627 10.4 s, paper's .001073 / .9622 15.9 s,
#     ACS alone .000960 / .9630 5.9 s; rRAKI .000861 / .9643 5.3 s, .000794 / .9654 17.5 s,
#     .000764 / .9658 6.4 s
#   24 lines, seed 0: RAKI .001123, .001113, .001003; rRAKI .000942, .000867, .000828
#   32 lines, seed 1: RAKI .000919 / .9645 11.4 s, .000861 / .9655 20.9 s, .000768 / .9662
#     7.5 s; rRAKI .000804 / .9658 5.2 s, .000749 / .9668 25.5 s, .000729 / .9669 7.1 s
# On the ACS block alone 64 components gave rRAKI .000783 (24 lines, seed 1), 96 .000767,
# 128 .000757 and every one (300) .000809; 600 steps .000844 where 1000 gave .000828 (seed
# 0). A constant 3e-3 as the paper's instead of the cosine from 1e-2 changed under 1 %. At R
# = 3 the widened block stays better (rRAKI .00315 widened, .00322 on the ACS block alone;
# RAKI .00355 and .00431).
WIDENED_FROM_ACCELERATION = 3
ITERATIONS_ACS_ALONE = 1000
FEATURES_ACS_ALONE = 128
# Slices trained together on a GPU. A training step costs about the same time for 8 slices
# as for 16 (an H100 waits on the host's kernel launches): at R = 4 on 15-coil 640 x 320
# slices RAKI took 0.134 s a slice in batches of 8 and 0.068 in one of 16. The peak memory
# of a batch (the inference over the whole k-space) was about 40 times the batch's complex64
# k-space: 15 GiB for 16 such slices.
MOST_SLICES_PER_BATCH = 32
GPU_BYTES_PER_KSPACE_BYTE = 48
# Without held-out rows nothing stops the training early and longer pays (RAKI at R = 2:
# NMSE 0.00129 after 200 steps, 0.00116 after 400); with them the patience ends it.
ITERATIONS_WITHOUT_HELD_OUT = 400
ITERATIONS_WITH_HELD_OUT = 200
# Residual RAKI's CNN starts at zero on top of GRAPPA: layer 1 trains on every patch
# component (at R = 4, seed 0: NMSE 0.0111 against 0.0115 on 64) and 200 steps suffice (on
# 64, 400 gave 0.0116).
ITERATIONS_RESIDUAL = 200
# Without held-out rows the CPU trains each step on half the training window's readout
# points, the halves taking turns (`_raki_train.readout_parts`): half the time a slice, at
# R = 4 on the phantom of raki.py NMSE .0080 -> .0084 (RAKI) and .0080 -> .0080 (residual
# RAKI). Four parts took RAKI to .0100, GRAPPA's .0101. A GPU has the time for whole steps.
CPU_READOUT_BATCHES = 2
# The readout points of the ACS that train the networks, with `training_readout` "auto".
# Training costs in proportion to them. On a CPU without bfloat16 products (float32: two
# AVX2 cores do about 150 GFLOPS) 128 points took 17-19 s a slice on the 15-coil phantom
# of raki.py, 96 took 13-15 s, for NMSE / SSIM (phantom seed 1, RAKI seed 0)
#   R = 2  .00103 / .9625 -> .00109 / .9618  (paper's training .00108 / .9624, 28 s;
#          GRAPPA .00108 / .9625)
#   R = 3  .00357 / .9005 -> .00378 / .8980  (.00467 / .8934, 35 s; GRAPPA .00435 / .8986)
#   R = 4  .00835 / .8282 -> .00862 / .8261  (.01250 / .8007, 29 s; GRAPPA .01010 / .8233)
#   R = 5  .01421 / .7641 -> .01440 / .7618  (GRAPPA .01511 / .7689)
#   R = 6  .01841 / .7166 -> .01872 / .7138  (GRAPPA .01885 / .7234)
# From R = 5 the change is within what the seeds move (RAKI seed 1: .01467 / .7581 ->
# .01432 / .7638 at R = 5, .01850 / .7143 -> .01847 / .7161 at R = 6).
TRAINING_READOUT = 128
TRAINING_READOUT_FLOAT32_CPU = 96


@contextlib.contextmanager
def runtime(device: torch.device, threads: int | None) -> Iterator[None]:
    """On the GPU deterministic algorithms, on the CPU `threads` threads (None: one per core),
    for the duration; the caller's settings are restored after. The CPU kernels used here
    are deterministic already (switching the flag there would only import the compiler)."""
    if device.type != "cpu":
        before = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)
        return
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)


def cpu_threads(threads: int | None) -> int:
    """Threads for CPU training: `threads`, or one per core. Fewer pays where other
    processes share the cores (waiting threads spin)."""
    if threads is not None and threads < 1:
        raise ReconError(f"threads must be at least 1, got {threads}")
    return threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Options:
    """Settings of a RAKI or residual RAKI reconstruction (recorded with the result).

    `training_readout` is how many central readout points of the ACS block train the networks
    (None: all, as in the paper; "auto": `TRAINING_READOUT`, or `TRAINING_READOUT_FLOAT32_CPU`
    on a CPU computing in float32); `precision` "float32" or "bfloat16" (mixed), None for
    bfloat16 where the hardware computes it natively. Residual RAKI's linear branch starts as
    our GRAPPA kernel (Tikhonov lambda `linear_regularization` relative to the largest
    singular value of the calibration matrix) and is trained at `linear_learning_rate` (None:
    `LINEAR_RATE_FACTOR` x `learning_rate`, i.e. fixed), its own error weighted
    `linear_weight` in the loss. `schedule`, `held_out`, `patience` and `features` are
    `_raki_train.Training`'s; `irregular_gaps` "grappa" fills the lines off the regular grid
    (beside the ACS block, at the edges) with GRAPPA kernels of their own geometry (Tikhonov
    lambda `linear_regularization`), "network" predicts them from the grid lines like the
    others; `held_out` None holds out no ACS rows below R = `HELD_OUT_FROM_ACCELERATION` and
    from there `HELD_OUT_RAKI` (RAKI) or `HELD_OUT_RESIDUAL` (residual RAKI) of them, or
    `HELD_OUT_EXTENDED` of a widened block; `iterations` None trains
    `ITERATIONS_ACS_ALONE` steps below R = `WIDENED_FROM_ACCELERATION`, and from there RAKI
    `ITERATIONS_WITHOUT_HELD_OUT` steps without held-out rows, `ITERATIONS_WITH_HELD_OUT` with
    them, residual RAKI `ITERATIONS_RESIDUAL`. `calibration_extension` lines on each side of
    the ACS block, filled by GRAPPA, widen the block the networks train on (None:
    `CALIBRATION_EXTENSION` from R = `WIDENED_FROM_ACCELERATION`, below it 0, the ACS block
    alone); `features` "auto" is every component on a widened block, `FEATURES_ACS_ALONE`
    on the ACS block alone below R = `WIDENED_FROM_ACCELERATION`, and from there
    `FEATURES_ACS` for RAKI and every component for residual RAKI.
    `readout_batches` splits the training window along the readout into that many parts
    trained on in turn, one a step (None: `CPU_READOUT_BATCHES` on the CPU without held-out
    rows, else 1).
    """

    iterations: int | None
    learning_rate: float
    seed: int = 0
    device: str | None = None
    slices_per_batch: int | None = None
    training_readout: int | str | None = None
    precision: str | None = None
    threads: int | None = None
    linear_learning_rate: float | None = None
    linear_weight: float = 0.0
    linear_regularization: float = 0.1
    schedule: str = "cosine"
    held_out: float | None = None
    patience: int | None = 40
    features: int | str | None = "auto"
    irregular_gaps: str = "grappa"
    calibration_extension: int | None = None
    readout_batches: int | None = None

    def resolved_linear_learning_rate(self) -> float:
        if self.linear_learning_rate is not None:
            return self.linear_learning_rate
        return self.learning_rate * LINEAR_RATE_FACTOR

    def resolved_held_out(self, acceleration: int, *, residual: bool) -> float:
        if self.held_out is not None:
            return self.held_out
        if acceleration < HELD_OUT_FROM_ACCELERATION:
            return 0.0
        if self.resolved_extension(acceleration, residual=residual) > 0:
            return HELD_OUT_EXTENDED
        return HELD_OUT_RESIDUAL if residual else HELD_OUT_RAKI

    def resolved_extension(self, acceleration: int, *, residual: bool) -> int:
        if self.calibration_extension is not None:
            return self.calibration_extension
        return CALIBRATION_EXTENSION if acceleration >= WIDENED_FROM_ACCELERATION else 0

    def resolved_features(self, acceleration: int, *, residual: bool) -> int | None:
        if not _is_auto(self.features, "features", "a number of components"):
            return self.features  # type: ignore[return-value]
        if self.resolved_extension(acceleration, residual=residual) > 0:
            return None
        if acceleration < WIDENED_FROM_ACCELERATION:
            return FEATURES_ACS_ALONE
        return None if residual else FEATURES_ACS

    def resolved_readout_batches(self, held_out: float, device: torch.device) -> int:
        if self.readout_batches is not None:
            return self.readout_batches
        return CPU_READOUT_BATCHES if device.type == "cpu" and held_out == 0 else 1

    def resolved_training_readout(self, device: torch.device, precision: str) -> int | None:
        if not _is_auto(self.training_readout, "training_readout", "a number of readout points"):
            return self.training_readout  # type: ignore[return-value]
        if device.type == "cpu" and precision == "float32":
            return TRAINING_READOUT_FLOAT32_CPU
        return TRAINING_READOUT

    def resolved_iterations(self, held_out: float, acceleration: int, *, residual: bool) -> int:
        if self.iterations is not None:
            return self.iterations
        if acceleration < WIDENED_FROM_ACCELERATION:
            return ITERATIONS_ACS_ALONE
        if residual:
            return ITERATIONS_RESIDUAL
        return ITERATIONS_WITH_HELD_OUT if held_out > 0 else ITERATIONS_WITHOUT_HELD_OUT


def _is_auto(value: int | str | None, name: str, number: str) -> bool:
    """Whether a setting that takes a number, None or "auto" is "auto"; refuses other text."""
    if not isinstance(value, str):
        return False
    if value != "auto":
        raise ReconError(f"{name} must be {number}, None (all) or 'auto', got {value!r}")
    return True


def resolve_device(name: str | None) -> torch.device:
    """The named device, else the GPU when present, else the CPU."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ReconError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; read when cuBLAS starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def resolve_precision(name: str | None, device: torch.device) -> str:
    """'bfloat16' or 'float32'; by default bfloat16 where the hardware has it natively."""
    if name is not None:
        if name not in {"float32", "bfloat16"}:
            raise ReconError(f"precision must be 'float32' or 'bfloat16', got {name!r}")
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if _cpu_has_bfloat16() else "float32"


def _cpu_has_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def slices_per_batch(asked: int | None, device: torch.device, slice_bytes: int) -> int:
    """`asked`, else 1 on the CPU and on a GPU as many as fit in three quarters of its free
    memory (at most `MOST_SLICES_PER_BATCH`), reckoning `GPU_BYTES_PER_KSPACE_BYTE` bytes
    of work space per byte of a slice's complex64 k-space."""
    if asked is not None:
        if asked < 1:
            raise ReconError(f"slices_per_batch must be at least 1, got {asked}")
        return asked
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    fitting = int(0.75 * free) // max(GPU_BYTES_PER_KSPACE_BYTE * slice_bytes, 1)
    return min(max(fitting, 1), MOST_SLICES_PER_BATCH)


def check_sampling(shape: tuple[int, ...], sampling: Sampling, *, separate: bool = False) -> None:
    """Refuse, saying why, sampling that RAKI cannot use for k-space of `shape` (..., x, PE);
    `separate`: the ACS block is a separate reference scan's, not lines of the k-space."""
    readout, lines = shape[-2], shape[-1]
    rate = sampling.acceleration
    start, stop = sampling.acs
    if sampling.mask.shape != (lines,):
        raise ReconError(
            f"the sampling mask has shape {sampling.mask.shape} but the k-space has {lines}"
            " phase-encode lines; the mask needs one entry per line"
        )
    if rate < 1:
        raise ReconError(f"the acceleration must be at least 1, got {rate}")
    if rate == 1:
        return
    if not 0 <= start < stop <= lines or not (separate or sampling.mask[start:stop].all()):
        raise ReconError(
            f"the ACS block {sampling.acs} is not a fully sampled range of the {lines} lines;"
            " RAKI trains on a contiguous calibration block"
        )
    if stop - start < 2 * rate + 1:
        raise ReconError(
            f"RAKI needs at least 2R+1 = {2 * rate + 1} ACS lines at R = {rate}, this"
            f" acquisition has {stop - start}; acquire more calibration lines or use GRAPPA"
        )
    if readout < 2 * MARGIN + 1:
        raise ReconError(f"RAKI needs at least {2 * MARGIN + 1} readout points, got {readout}")


def grid_phase(sampling: Sampling) -> int:
    """Offset (line index mod R) of the regularly sampled lines outside the ACS block.

    >>> mask = np.zeros(12, dtype=bool); mask[1::4] = True; mask[4:8] = True
    >>> grid_phase(Sampling(mask=mask, acs=(4, 8), acceleration=4))
    1
    """
    rate = sampling.acceleration
    start, stop = sampling.acs
    lines = np.flatnonzero(sampling.mask)
    outside = lines[(lines < start) | (lines >= stop)]
    if outside.size == 0:
        return start % rate
    return int(np.bincount(outside % rate, minlength=rate).argmax())


def fill(
    data: ComplexArray,
    sampling: Sampling,
    *,
    options: Options,
    residual: bool,
    calibration: ComplexArray | None = None,
) -> ComplexArray:
    """Filled k-space (slices, coils, readout, PE): the acquired lines and the predicted ones.

    Every acquired line (ACS and regular) is returned exactly as measured; the R-1 lines of
    each gap of the regular grid are predicted. Readout points near the readout borders are
    predicted from zero-padded neighbours (the k-space periphery). The lines off the regular
    grid (beside the ACS block, at the phase-encode borders, around a grid line that was not
    acquired) are filled by GRAPPA kernels of their geometry (`irregular_gaps` "grappa"), or
    like the others from the grid lines, zero-padded at the borders ("network"; a grid line
    that was not acquired then stays zero). `calibration` (slices, coils, readout, ACS
    lines) is a separate reference scan's ACS block: the networks and kernels train on it
    alone, and every missing line of `data`, the centre included, is predicted.
    """
    if _check(data, sampling, options, calibration):
        return np.array(data, dtype=np.complex64, copy=True)
    filled = np.empty(data.shape, dtype=np.complex64)
    batches = _filled_batches(
        data, sampling, options=options, residual=residual, calibration=calibration
    )
    for first, batch in batches:
        filled[first : first + batch.shape[0]] = batch.cpu().numpy()
    return filled


def _check(
    data: ComplexArray, sampling: Sampling, options: Options, calibration: ComplexArray | None
) -> bool:
    """Refuse, saying why, what RAKI cannot reconstruct; True when nothing is missing."""
    if data.ndim != 4:
        raise ReconError(
            f"RAKI takes k-space shaped (slices, coils, readout, phase-encode), got {data.shape}"
        )
    check_sampling(data.shape, sampling, separate=calibration is not None)
    if calibration is not None and calibration.shape != (*data.shape[:3], sampling.acs_lines):
        raise ReconError(
            f"the calibration block {calibration.shape} does not match the k-space "
            f"{data.shape} and its {sampling.acs_lines} ACS lines"
        )
    if calibration is not None and not np.isfinite(calibration).all():
        raise ReconError("the reference scan contains NaN or infinite values")
    if (options.iterations is not None and options.iterations < 0) or options.learning_rate <= 0:
        raise ReconError(
            f"RAKI needs iterations >= 0 and a positive learning rate, got"
            f" {options.iterations} and {options.learning_rate}"
        )
    if options.readout_batches is not None and options.readout_batches < 1:
        raise ReconError(
            f"readout_batches must be 1 or more (None: automatic), got {options.readout_batches}"
        )
    if options.schedule not in SCHEDULES:
        raise ReconError(
            f"schedule must be one of {', '.join(SCHEDULES)}, got {options.schedule!r}"
        )
    options.resolved_features(sampling.acceleration, residual=False)
    options.resolved_training_readout(torch.device("cpu"), "float32")
    if options.calibration_extension is not None and options.calibration_extension < 0:
        raise ReconError(
            f"calibration_extension must be 0 or more lines, got {options.calibration_extension}"
        )
    if options.irregular_gaps not in IRREGULAR_GAPS:
        raise ReconError(
            f"irregular_gaps must be one of {', '.join(IRREGULAR_GAPS)},"
            f" got {options.irregular_gaps!r}"
        )
    if not np.isfinite(data).all():
        raise ReconError("the k-space contains NaN or infinite values; RAKI cannot train on them")
    return sampling.acceleration == 1 or bool(sampling.mask.all())


def _filled_batches(
    data: ComplexArray,
    sampling: Sampling,
    *,
    options: Options,
    residual: bool,
    calibration: ComplexArray | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first slice, filled complex k-space of the batch on the device) per batch of slices:
    the whole reconstruction of a batch stays on the device until its images are made."""
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    per_batch = slices_per_batch(options.slices_per_batch, device, data[:1].nbytes)
    groups = irregular_groups(sampling, blocks=KERNEL_1[1])
    acquired = _index(np.flatnonzero(sampling.mask), torch.empty(0, device=device))

    def filled(first: int, stop: int) -> torch.Tensor:
        measured = torch.from_numpy(np.ascontiguousarray(data[first:stop], dtype=np.complex64)).to(
            device
        )
        reference = None
        if calibration is not None:
            block = np.ascontiguousarray(calibration[first:stop], dtype=np.complex64)
            reference = torch.from_numpy(block).to(device)
        batch = _fill_batch(
            measured, sampling, options=options, residual=residual,
            mixed_precision=precision == "bfloat16", reference=reference,
        )  # fmt: skip
        batch[..., acquired] = measured[..., acquired]
        if options.irregular_gaps == "grappa":
            fill_groups(
                batch, sampling, groups, taps=KERNEL_1[0],
                regularization=options.linear_regularization, calibration=reference,
            )  # fmt: skip
        return batch

    with runtime(device, options.threads):
        yield from in_batches(data.shape[0], per_batch, filled)


def in_batches(
    count: int, size: int, run: Callable[[int, int], torch.Tensor]
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first, `run(first, stop)`) over `count` slices, `size` at a time; a batch that runs
    the GPU out of memory (another job took some since the size was chosen) is tried again
    in halves, down to one slice. Results do not depend on the batch size."""
    first = 0
    while first < count:
        stop = min(first + size, count)
        try:
            result = run(first, stop)
        except torch.OutOfMemoryError as err:
            if size == 1:
                raise ReconError(
                    "the GPU ran out of memory reconstructing a single slice; free GPU "
                    "memory (other jobs on the card) or use the setting device=cpu"
                ) from err
            size = max(size // 2, 1)
            logger.warning("out of GPU memory: slices %d-%d again, %d at a time", first, stop, size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        yield first, result
        first = stop


def _fill_batch(
    measured: torch.Tensor,
    sampling: Sampling,
    *,
    options: Options,
    residual: bool,
    mixed_precision: bool,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The missing lines of the grid predicted (complex, slices x coils x readout x PE, on
    the device of `measured`); zeros on every other line. With `reference` (a separate
    reference scan's ACS blocks) the networks train on it alone."""
    start, stop = sampling.acs
    inputs = torch.cat([measured.real, measured.imag], dim=1)
    acs_inputs = inputs[..., start:stop]
    if reference is not None:
        acs_inputs = torch.cat([reference.real, reference.imag], dim=1)
    # Networks without bias are positively homogeneous, so a per-slice scale changes only
    # the numbers Adam's step size meets: the largest ACS magnitude becomes 1.
    scale = acs_inputs.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
    inputs = inputs / scale
    channels = inputs.shape[1]
    weights = initial_weights(
        channels,
        sampling.acceleration,
        seed=options.seed,
        outputs=range(channels),
        slices=measured.shape[0],
        residual=residual,
        dtype=torch.float32,
        device=measured.device,
    )
    held_out = options.resolved_held_out(sampling.acceleration, residual=residual)
    features = options.resolved_features(sampling.acceleration, residual=residual)
    training = Training(
        options.resolved_iterations(held_out, sampling.acceleration, residual=residual),
        options.learning_rate,
        mixed_precision=mixed_precision,
        linear_learning_rate=options.resolved_linear_learning_rate(),
        linear_weight=options.linear_weight,
        regularization=options.linear_regularization,
        schedule=options.schedule,
        held_out=held_out,
        patience=options.patience,
        features=features,
        seed=options.seed,
        readout_batches=options.resolved_readout_batches(held_out, measured.device),
    )
    width = options.resolved_training_readout(
        measured.device, "bfloat16" if mixed_precision else "float32"
    )
    if reference is None:
        windows = [training_window(one, sampling, width) for one in inputs]
    else:
        whole = replace(sampling, acs=(0, sampling.acs_lines))
        windows = [training_window(one, whole, width) for one in acs_inputs]
    block = calibration_block(
        measured, sampling,
        extension=options.resolved_extension(sampling.acceleration, residual=residual),
        regularization=options.linear_regularization, reference=reference,
    )  # fmt: skip
    block_inputs = torch.cat([block.real, block.imag], dim=1) / scale
    acs = torch.stack([one[:, window] for one, window in zip(block_inputs, windows, strict=True)])
    linear_start = None
    if residual:
        linear_start = grappa_branch(
            block, sampling.acceleration,
            outputs=channels, regularization=options.linear_regularization,
        )  # fmt: skip
    train(weights, acs, outputs=range(channels), training=training, linear_start=linear_start)
    with torch.no_grad():
        predicted = predict(weights, inputs, sampling, rank=features) * scale
    half = channels // 2
    return torch.complex(predicted[:, :half], predicted[:, half:])


def calibration_block(
    measured: torch.Tensor,
    sampling: Sampling,
    *,
    extension: int,
    regularization: float,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The complex block (slices, coils, readout, lines) the networks train on: the ACS
    block, widened by `extension` lines on each side (within the k-space) whose missing
    lines GRAPPA fills (Tikhonov lambda `regularization`) around the acquired ones; or
    `reference`, a separate reference scan's ACS block, alone (widening it with image lines
    would mix two contrasts)."""
    if reference is not None:
        return reference
    start, stop = sampling.acs
    if extension <= 0:
        return measured[..., start:stop]
    lines = measured.shape[-1]
    first, last = max(start - extension, 0), min(stop + extension, lines)
    filled = measured.clone()
    filled[..., _index(np.flatnonzero(~sampling.mask), measured)] = 0
    groups = gap_groups(sampling.mask, blocks=KERNEL_1[1], acs_lines=sampling.acs_lines)
    fill_groups(filled, sampling, groups, taps=KERNEL_1[0], regularization=regularization)
    return filled[..., first:last]


def _images(kspace: torch.Tensor, header: dict[str, Any]) -> FloatArray:
    """`image.kspace_to_images` of a batch of full k-space on its device: the phase-encode
    padding restored, the centred orthonormal inverse FFT, RSS over coils, the crop to the
    header's reconSpace matrix; only the images travel to the host."""
    encoded = header.get("encoded_matrix")
    columns = kspace.shape[-1]
    width = int(encoded[1]) if encoded else columns
    if width != columns:
        offset = pe_offset(header, columns)
        padded = kspace.new_zeros(*kspace.shape[:-1], width)
        padded[..., offset : offset + columns] = kspace
        kspace = padded
    axes = (-2, -1)
    shifted = torch.fft.ifftshift(kspace, dim=axes)
    coil_images = torch.fft.fftshift(torch.fft.ifft2(shifted, dim=axes, norm="ortho"), dim=axes)
    images = coil_images.abs().square().sum(dim=1).sqrt()
    rows, cols = images.shape[-2:]
    keep_rows, keep_cols = (
        min(a, b) for a, b in zip(recon_shape(header, (rows, cols)), (rows, cols), strict=True)
    )
    top, left = (rows - keep_rows) // 2, (cols - keep_cols) // 2
    cropped = images[..., top : top + keep_rows, left : left + keep_cols]
    return np.ascontiguousarray(cropped.cpu().numpy(), dtype=np.float32)


def training_window(inputs: torch.Tensor, sampling: Sampling, width: int | None) -> slice:
    """The `width` readout points of one slice's ACS block (C, readout, PE) centred on its
    energy peak; all of them for None."""
    readout = inputs.shape[1]
    if width is None or width >= readout:
        return slice(0, readout)
    if width < 2 * MARGIN + 1:
        raise ReconError(f"training_readout must be at least {2 * MARGIN + 1}, got {width}")
    start, stop = sampling.acs
    energy = inputs[..., start:stop].square().sum(dim=(0, 2))
    peak = int(torch.argmax(energy))
    first = min(max(peak - width // 2, 0), readout - width)
    return slice(first, first + width)


def predict(
    weights: Weights, inputs: torch.Tensor, sampling: Sampling, *, rank: int | None = None
) -> torch.Tensor:
    """The missing lines predicted from the acquired grid lines; zeros on all other lines.

    The dilated kernels touch only lines R apart, so the networks run undilated on the grid
    lines alone (padded by one grid step before and two after, and by 3 readout points on
    each side), one output per gap instead of one per line. `rank` is that of the layer-1
    filters when they were trained on principal components (`forward`).
    """
    rate = sampling.acceleration
    slices, channels, readout, lines = inputs.shape
    phase = grid_phase(sampling)
    first = -1 if phase > 0 else 0
    last = (lines - 1 - phase) // rate
    grid = phase + (first + np.arange(last - first + 3)) * rate
    acquired = (grid >= 0) & (grid < lines)
    acquired[acquired] = sampling.mask[grid[acquired]]
    stacked = inputs.new_zeros(slices, channels, readout + 2 * MARGIN, grid.size)
    stacked[:, :, MARGIN:-MARGIN, _index(np.flatnonzero(acquired), inputs)] = inputs[
        ..., _index(grid[acquired], inputs)
    ]
    patched = patches(stacked, dilation=1)
    cnn, linear = forward(weights, patched, (readout + 2, grid.size - 1), dilation=1, rank=rank)
    values = cnn if linear is None else cnn + linear
    predicted = torch.zeros_like(inputs)
    for offset in range(1, rate):
        lines_at = grid[:-2] + offset
        inside = (lines_at >= 0) & (lines_at < lines)
        columns = _index(np.flatnonzero(inside), inputs)
        predicted[..., _index(lines_at[inside], inputs)] = values[:, :, offset - 1, :, columns]
    return predicted


def _index(values: npt.NDArray[np.intp], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=like.device)


def reconstruct(kspace: KSpace, options: Options, *, method: str) -> Reconstruction:
    """Magnitude images of `kspace` by RAKI (method "raki") or residual RAKI ("rraki").

    The settings record every option with the device and precision actually used.
    """
    begin = time.perf_counter()
    device = resolve_device(options.device)
    held_out = options.resolved_held_out(kspace.sampling.acceleration, residual=method == "rraki")
    precision = resolve_precision(options.precision, device)
    used = replace(
        options,
        iterations=options.resolved_iterations(
            held_out, kspace.sampling.acceleration, residual=method == "rraki"
        ),
        device=str(device),
        precision=precision,
        training_readout=options.resolved_training_readout(device, precision),
        threads=cpu_threads(options.threads) if device.type == "cpu" else None,
        linear_learning_rate=options.resolved_linear_learning_rate(),
        held_out=held_out,
        calibration_extension=0
        if kspace.calibration is not None
        else options.resolved_extension(kspace.sampling.acceleration, residual=method == "rraki"),
        features=options.resolved_features(
            kspace.sampling.acceleration, residual=method == "rraki"
        ),
        readout_batches=options.resolved_readout_batches(held_out, device),
    )
    images = _reconstructed_images(kspace, used, residual=method == "rraki")
    settings: dict[str, Any] = {
        **asdict(used),
        "acceleration": kspace.sampling.acceleration,
        "acs_lines": kspace.sampling.acs_lines,
    }
    if method != "rraki":
        for name in ("linear_learning_rate", "linear_weight", "linear_regularization"):
            del settings[name]
    seconds = (time.perf_counter() - begin) / max(kspace.slices, 1)
    return Reconstruction(
        images=images, method=method, settings=settings, seconds_per_slice=seconds
    )


def _reconstructed_images(kspace: KSpace, options: Options, *, residual: bool) -> FloatArray:
    data, sampling = kspace.data, kspace.sampling
    calibration = None if kspace.calibration is None else kspace.acs_data()
    if _check(data, sampling, options, calibration):
        return kspace_to_images(data, kspace.header)
    batches = _filled_batches(
        data, sampling, options=options, residual=residual, calibration=calibration
    )
    images = [_images(batch, kspace.header) for _, batch in batches]
    return np.concatenate(images)


def fill_slice(
    kspace_slice: ComplexArray, sampling: Sampling, *, options: Options, residual: bool
) -> ComplexArray:
    """`fill` for one slice (coils, readout, PE); acquired lines are returned as given."""
    if kspace_slice.ndim != 3:
        raise ReconError(
            f"fill takes one slice (coils, readout, phase-encode), got shape {kspace_slice.shape}"
        )
    filled: ComplexArray = fill(kspace_slice[None], sampling, options=options, residual=residual)[0]
    return filled
