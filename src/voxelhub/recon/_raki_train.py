"""Training the batched RAKI networks on the ACS block: Adam, a cosine schedule, early stopping.

Time goes into optimiser steps times the cost of a step; both are cut without changing the
networks' job:

- Steps: Adam's learning rate falls from `learning_rate` to 0 along a half cosine over
  `iterations` steps (large steps while far from a minimum, small ones to settle).
- Early stopping: the outermost `held_out` fraction of the ACS rows is never trained on;
  every `check_every` steps each network's error there is compared with its best so far and
  its weights kept when better, so each network ends at its own best held-out error. The
  batch stops once the networks' summed best error has fallen by less than 0.1 % over
  `patience` steps. The held-out error comes
  from the same forward pass as the training loss, at no extra cost. Outer rows rather than
  scattered positions: the networks are applied outwards of the ACS, and positions among the
  trained ones kept improving while the image got worse (residual RAKI at R = 6 went from
  GRAPPA's NMSE 0.019 to 0.040 with scattered positions, stayed at 0.019 with outer rows).
- Cost per step: layer 1 dominates (networks*32 x C*10 x positions, twice). With `features`
  the patches are first projected onto their leading principal components (per slice, from
  the ACS), so layer 1 learns a (networks*32) x features map; the filters are mapped back to
  the 5x2 coil kernel afterwards, so inference is unchanged. The singular values of 15
  coils' patches flatten into noise after about 100 of 300 components; at R = 4, 200 steps
  on 64 components gave NMSE 0.0130 where all 300 gave 0.0157.
- Positions per step: with `readout_batches` k the window is cut along the readout into k
  parts whose targets tile the window's (`readout_parts`), and step i trains on part
  i mod k, each step costing 1/k. With two parts RAKI at R = 4 went from NMSE .0081 to
  .0084 in half the time, residual RAKI stayed at .0080; four parts cost RAKI .0100.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from voxelhub.recon._grappa_batch import fit_kernels
from voxelhub.recon._raki_cnn import (
    KERNEL_1,
    MARGIN,
    TAPS_3,
    Batch,
    Weights,
    forward_backward,
    output_shape,
    patches,
    targets,
)
from voxelhub.recon.gaps import GapGroup


@dataclass(frozen=True)
class Training:
    """How the networks are trained: Adam, full batch, at most `iterations` steps.

    `mixed_precision` runs the matrix products in bfloat16 (weights, loss and optimiser state
    stay in the weights' precision). `schedule` "cosine" or "constant" learning rate;
    `held_out` the fraction of ACS positions kept for early stopping (0: none, the final
    weights are kept), checked every `check_every` steps, the batch stopping after `patience`
    steps in which the sum of the networks' best held-out errors fell by less than
    `tolerance` (relative; `patience` None: never early); `features` principal components of the
    layer-1 patches trained on (None: all). For residual RAKI: `linear_learning_rate` is the
    linear branch's (None: `learning_rate`; 0: frozen), `linear_weight` the weight of its own
    error in the loss, `regularization` the Tikhonov lambda of its least-squares start
    relative to the largest singular value of the calibration matrix.
    """

    iterations: int
    learning_rate: float
    mixed_precision: bool = False
    linear_learning_rate: float | None = None
    linear_weight: float = 0.0
    regularization: float = 0.1
    schedule: str = "constant"
    held_out: float = 0.0
    check_every: int = 5
    patience: int | None = None
    tolerance: float = 1e-3
    features: int | None = None
    seed: int = 0
    readout_batches: int = 1


def train(
    weights: Weights,
    acs: torch.Tensor,
    *,
    outputs: range | list[int],
    training: Training,
    linear_start: torch.Tensor | None = None,
) -> list[float]:
    """Train the networks in place on acs (slices, C, readout, lines); the loss per step.

    Residual RAKI's linear branch starts at `linear_start` (see `grappa_branch`), else at
    its least-squares fit on `acs`.

    The loss is the sum over slices and networks of each network's mean squared error on
    the trained positions (residual RAKI: of both branches' sum, plus `linear_weight` times
    the linear branch's own), so each network gets the gradient it would get alone.
    """
    acceleration = weights.w3.shape[1] // TAPS_3 + 1
    columns = patches(acs, dilation=acceleration)
    grid = (acs.shape[2] - (KERNEL_1[0] - 1), acs.shape[3] - (KERNEL_1[1] - 1) * acceleration)
    wanted = targets(acs, outputs, acceleration)
    linear_columns = None
    if weights.linear is not None:
        linear_columns = _at_outputs(columns, grid, acceleration)
        if linear_start is not None:
            with torch.no_grad():
                weights.linear.copy_(linear_start)
        else:
            fit_linear(
                weights.linear, linear_columns, wanted, regularization=training.regularization
            )
    basis = _principal_basis(columns, training.features)
    w1 = weights.w1
    if basis is not None:
        w1 = torch.bmm(weights.w1.detach(), basis.transpose(1, 2)).requires_grad_()
    build = functools.partial(
        _batch, outputs=outputs, basis=basis, acceleration=acceleration,
        residual=weights.linear is not None,
    )  # fmt: skip
    batches = [
        _batches(part, build, training, acceleration)
        for part in readout_parts(acs, training.readout_batches)
    ]
    parameters = [w1, weights.w2, weights.w3]
    if weights.linear is not None:
        parameters.append(weights.linear)
    history = _optimise(parameters, batches, training=training)
    with torch.no_grad():
        if basis is not None:
            weights.w1.copy_(torch.bmm(w1, basis))
    return history


def readout_parts(acs: torch.Tensor, count: int) -> list[torch.Tensor]:
    """`acs` (slices, C, readout, PE) cut along the readout into `count` overlapping parts
    whose training targets tile those of the whole block: part i's targets are readout
    points lo_i ... hi_i - 1 of the whole's, its inputs those plus `MARGIN` on each side."""
    outputs = acs.shape[2] - 2 * MARGIN
    count = max(1, min(count, outputs))
    edges = [round(i * outputs / count) for i in range(count + 1)]
    return [acs[:, :, lo : hi + 2 * MARGIN] for lo, hi in itertools.pairwise(edges)]


@dataclass(frozen=True)
class _Part:
    """A part of the training window: `whole` reads every output position, the held-out
    ones included (`held_out` 1 there), for the steps that check the held-out error;
    `trained` only the rows trained on, for the others (None: nothing is held out)."""

    whole: Batch
    held_out: torch.Tensor
    trained: Batch | None


def _batches(
    acs: torch.Tensor,
    build: Callable[..., tuple[Batch, torch.Tensor]],
    training: Training,
    acceleration: int,
) -> _Part:
    """The batches of a step on `acs`, made by `build(acs, training=...)` (`_batch` with
    the rest of its arguments given). The held-out rows get no gradient, so a step that
    does not check them computes exactly the same on the block cropped to the trained
    rows: output column j reads the lines j ... j + 2R of the block."""
    whole, held_out = build(acs, training=training)
    trained_columns = torch.nonzero(held_out[0] == 0).flatten()
    if trained_columns.numel() == held_out.shape[1]:
        return _Part(whole, held_out, None)
    first, last = int(trained_columns[0]), int(trained_columns[-1])
    # The held-out rows are the block's outermost, so the trained ones are contiguous.
    assert last - first + 1 == trained_columns.numel()
    cropped, _ = build(
        acs[..., first : last + 1 + 2 * acceleration], training=replace(training, held_out=0.0)
    )
    return _Part(whole, held_out, cropped)


def _batch(
    acs: torch.Tensor,
    outputs: range | list[int],
    basis: torch.Tensor | None,
    *,
    acceleration: int,
    residual: bool,
    training: Training,
) -> tuple[Batch, torch.Tensor]:
    """What a step on `acs` reads, and its held-out mask (1 on the held-out positions)."""
    columns = patches(acs, dilation=acceleration)
    grid = (acs.shape[2] - (KERNEL_1[0] - 1), acs.shape[3] - (KERNEL_1[1] - 1) * acceleration)
    wanted = targets(acs, outputs, acceleration)
    linear_columns = _at_outputs(columns, grid, acceleration) if residual else None
    if basis is not None:
        columns = torch.bmm(basis, columns)
    kept = _held_out_mask(wanted.shape[-2:], training, device=acs.device)
    batch = Batch(
        columns=columns.to(torch.bfloat16 if training.mixed_precision else acs.dtype),
        linear_columns=linear_columns,
        wanted=wanted,
        loss_weight=kept / kept.sum().clamp_min(1),
        grid=grid,
        dilation=acceleration,
        linear_weight=training.linear_weight,
    )
    return batch, 1 - kept


def _optimise(
    parameters: list[torch.Tensor],
    batches: list[_Part],
    *,
    training: Training,
) -> list[float]:
    # The gradients are written out: recording an autograd graph would only cost time.
    with torch.no_grad():
        return _steps(parameters, batches, training=training)


def _steps(
    parameters: list[torch.Tensor],
    batches: list[_Part],
    *,
    training: Training,
) -> list[float]:
    """Adam steps, step i on batch i mod len(batches); the held-out error is checked on the
    first batch only, so that successive checks compare like with like."""
    groups = [(parameters[:3], training.learning_rate)]
    linear_rate = training.linear_learning_rate
    if len(parameters) > 3 and linear_rate != 0:
        groups.append((parameters[3:], linear_rate or training.learning_rate))
    optimizer = Adam(groups)
    first = batches[0]
    every = training.check_every * len(batches)
    stopping = None
    if first.held_out.any():
        stopping = _EarlyStopping(parameters, first.held_out, training, every)
    history: list[torch.Tensor] = []  # read at the end: reading each would wait for a GPU
    for step in range(training.iterations):
        factor = _schedule(step, training)
        part = batches[step % len(batches)]
        checking = stopping is not None and step % every == 0
        batch = part.whole if checking or part.trained is None else part.trained
        squared, grads = forward_backward(parameters, batch)
        history.append((squared * batch.loss_weight).sum() / squared.shape[2])
        if checking and stopping is not None and stopping.check(squared):
            break
        optimizer.step(dict(zip(map(id, parameters), grads, strict=True)), factor)
    if stopping is not None:
        squared, _ = forward_backward(parameters, first.whole)
        stopping.check(squared)
        stopping.restore()
    return torch.stack(history).tolist() if history else []


class Adam:
    """Adam (Kingma and Ba) with PyTorch's defaults (betas 0.9 and 0.999, eps 1e-8), each
    step's learning rates scaled by a factor: the arithmetic of `torch.optim.Adam` on one
    tensor at a time. Written out because PyTorch's first step imports its compiler (about
    2 s per process) and hands gradients over through `.grad`.

    `groups` are (parameters, learning rate); the state is kept per parameter.
    """

    def __init__(
        self,
        groups: list[tuple[list[torch.Tensor], float]],
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.groups = groups
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.moments = {
            id(parameter): (torch.zeros_like(parameter), torch.zeros_like(parameter))
            for parameters, _ in groups
            for parameter in parameters
        }

    @torch.no_grad()
    def step(self, grads: dict[int, torch.Tensor], factor: float = 1.0) -> None:
        """One update with the gradients by parameter id, the rates times `factor`."""
        beta1, beta2 = self.betas
        self.steps += 1
        correction1 = 1 - beta1**self.steps
        correction2 = (1 - beta2**self.steps) ** 0.5
        for parameters, rate in self.groups:
            step_size = rate * factor / correction1
            for parameter in parameters:
                grad = grads[id(parameter)]
                mean, square = self.moments[id(parameter)]
                mean.lerp_(grad, 1 - beta1)
                square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (square.sqrt() / correction2).add_(self.eps)
                parameter.addcdiv_(mean, denominator, value=-step_size)


def _schedule(step: int, training: Training) -> float:
    if training.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * step / max(training.iterations, 1)))


class _EarlyStopping:
    """Each network's best weights by its error on the held-out positions."""

    def __init__(
        self,
        parameters: list[torch.Tensor],
        held_out: torch.Tensor,
        training: Training,
        every: int,
    ):
        self.parameters = parameters
        self.held_out = held_out / held_out.sum()
        self.patience = training.patience
        self.best: torch.Tensor | None = None
        self.kept = [p.detach().clone() for p in parameters]
        self.since = 0
        self.reference = float("inf")
        self.tolerance = training.tolerance
        self.every = every

    def check(self, squared: torch.Tensor) -> bool:
        """Keep the networks that improved; True when it is time to stop."""
        slices, networks = squared.shape[:2]
        error = (squared * self.held_out).sum(dim=(2, 3)).flatten()
        if self.best is None:
            better = torch.ones_like(error, dtype=torch.bool)
        else:
            better = error < self.best
        self.best = error if self.best is None else torch.where(better, error, self.best)
        with torch.no_grad():
            for kept, now in zip(self.kept, self.parameters, strict=True):
                # Every parameter's leading elements are grouped network by network.
                shape = (slices * networks, -1)
                chosen = torch.where(better[:, None], now.view(shape), kept.view(shape))
                kept.view(shape).copy_(chosen)
        # Progress is the sum of the networks' best errors falling by `tolerance` (relative):
        # with dozens of networks one of them nearly always improves a little.
        total = float(self.best.sum())
        if total < self.reference * (1 - self.tolerance):
            self.reference, self.since = total, 0
        else:
            self.since += 1
        return self.patience is not None and self.since * self.every >= self.patience

    def restore(self) -> None:
        with torch.no_grad():
            for kept, now in zip(self.kept, self.parameters, strict=True):
                now.copy_(kept)


def _held_out_mask(shape: torch.Size, training: Training, *, device: torch.device) -> torch.Tensor:
    """1 on the output positions (readout, PE) trained on, 0 on the held-out ones: the
    `held_out` fraction of PE rows taken from the ACS block's edges, outermost first, so
    the held-out error measures how the networks carry outwards in k-space."""
    kept = torch.ones(tuple(shape), device=device)
    if training.held_out <= 0:
        return kept
    rows = shape[-1]
    count = min(max(round(training.held_out * rows), 1), rows - 1)
    edges = [row for pair in zip(range(rows), reversed(range(rows)), strict=True) for row in pair]
    kept[:, edges[:count]] = 0
    return kept


def _principal_basis(columns: torch.Tensor, features: int | None) -> torch.Tensor | None:
    """Per slice the leading `features` principal directions of the patches, (slices, k, F):
    eigenvectors of their Gram matrix (F x F, much cheaper than an SVD of the patches)."""
    if features is None or features >= columns.shape[1]:
        return None
    patches = columns.double()
    _, vectors = torch.linalg.eigh(patches @ patches.transpose(1, 2))
    basis: torch.Tensor = vectors.flip(-1)[..., :features].transpose(1, 2)
    return basis.to(columns.dtype).contiguous()


def _at_outputs(columns: torch.Tensor, grid: tuple[int, int], acceleration: int) -> torch.Tensor:
    """The patches the linear branch reads for each output position, (slices, F, outputs).

    The 5x2 kernel at layer-1 position (x + 1, p) reads readout x + 1 ... x + 5 of lines p
    and p + R: centred on the CNN's target point x + 3, on both sides of its gap.
    """
    slices, features, _ = columns.shape
    rows, cols = output_shape(grid, acceleration)
    window = columns.view(slices, features, *grid)[..., 1 : 1 + rows, :cols]
    return window.reshape(slices, features, rows * cols)


def fit_linear(
    linear: torch.Tensor, sources: torch.Tensor, wanted: torch.Tensor, *, regularization: float
) -> None:
    """Set the linear branch to its Tikhonov least-squares fit of the targets (GRAPPA)."""
    slices, features, _ = sources.shape
    goals = wanted.reshape(slices, linear.shape[1], -1).double()
    sources = sources.double()
    gram = sources @ sources.transpose(1, 2)
    largest = torch.linalg.matrix_norm(gram, ord=2).clamp_min(1e-30)
    identity = torch.eye(features, dtype=gram.dtype, device=gram.device)
    ridge = regularization**2 * largest[:, None, None] * identity
    solved = torch.linalg.solve(gram + ridge, sources @ goals.transpose(1, 2))
    with torch.no_grad():
        linear.copy_(solved.transpose(1, 2))


def grappa_branch(
    acs: torch.Tensor, acceleration: int, *, outputs: int, regularization: float
) -> torch.Tensor:
    """Residual RAKI's linear branch as our GRAPPA kernel, (slices, outputs*(R-1),
    2*coils*10), from the complex calibration blocks (slices, coils, readout, lines: the ACS
    block, or the block widened by GRAPPA, `_raki_net.calibration_block`) on their device.

    The complex 5x2 kernel from the lines p and p + R to p + 1 ... p + R - 1 is fitted on
    the whole block of each slice exactly as `grappa.fit_kernel` fits it, then written as
    the real map on real/imaginary-stacked patches: with weights u + iv,
    Re y = u Re x - v Im x and Im y = v Re x + u Im x.
    """
    slices, coils = acs.shape[:2]
    group = GapGroup(
        sources=(0, acceleration),
        targets=tuple(range(1, acceleration)),
        bases=np.zeros(1, dtype=np.intp),
    )
    taps = KERNEL_1[0]
    kernel = fit_kernels(acs, group, taps=taps, regularization=regularization)
    # The rows are (tap, coil, source), the columns (coil, target line).
    complex_kernel = kernel.reshape(slices, taps, coils, 2, coils, acceleration - 1)
    # (slice, out coil, line, in coil, tap, source)
    real = complex_kernel.real.permute(0, 4, 5, 2, 1, 3)
    imag = complex_kernel.imag.permute(0, 4, 5, 2, 1, 3)
    rows = torch.stack([torch.cat([real, -imag], dim=3), torch.cat([imag, real], dim=3)], dim=1)
    return rows.reshape(slices, 2 * coils * (acceleration - 1), -1)[
        :, : outputs * (acceleration - 1)
    ]
