"""The batched RAKI networks: weights, inference, and a training step with written-out gradients.

RAKI (Akcakaya et al., MRM 2019) trains, per slice and per real output channel (real and
imaginary part of each coil, 2*Nc in all), a three-layer CNN on the real/imaginary-stacked
coils: conv 5x2 (readout x phase-encode) with 32 filters and ReLU, conv 1x1 with 8 filters
and ReLU, conv 3x2 with R-1 outputs; the phase-encode taps dilated by R, no padding, no bias.
With its taps dilated by R a network reads the acquired lines p, p+R and p+2R over 7 readout
points and predicts the R-1 lines p+1 ... p+R-1 at the central readout point.

The networks share their input, so instead of 2*Nc separate trainings the weights of every
network of every slice in a batch are stacked along a leading axis and the three layers
evaluated as matrix products:

- layer 1: one GEMM of the fixed patch matrix of the input (features x positions) with the
  stacked filters of all networks ((networks*32) x features);
- layer 2: a batched product, one 8 x 32 matrix per network;
- layer 3: a batched product with the six 3x2 taps of each network at every position, the
  taps then shifted into place and summed (cheaper than gathering the neighbourhoods).

The loss is the sum over networks of each network's own mean squared error and Adam works
element by element, so every network gets exactly the gradient and the update it would get
if trained alone: the batching reorganises the arithmetic, it does not approximate. The
backward pass is written out (`forward_backward`): six batched products and two ReLU masks;
autograd computes the same numbers through a graph and casts of every operand, which on a
few CPU cores cost as much again as the products.

Residual RAKI (Zhang et al., NeuroImage 2022) adds a linear branch, a GRAPPA-like 5x2
kernel with the same dilation over the two lines bordering the gap, evaluated on the same
patches as layer 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional

FILTERS_1 = 32
FILTERS_2 = 8
KERNEL_1 = (5, 2)
# Readout points the unpadded convolutions consume on each side: (5 - 1)/2 + (3 - 1)/2.
MARGIN = 3
KERNEL_3 = (3, 2)
TAPS_3 = KERNEL_3[0] * KERNEL_3[1]


@dataclass(frozen=True)
class Weights:
    """The weights of `networks` networks per slice for `slices` slices (leading axes).

    w1: (slices, networks*32, C*10); w2: (slices*networks, 8, 32);
    w3: (slices*networks, 6*(R-1), 8), the six 3x2 taps in (readout, phase-encode) order;
    linear: (slices, networks*(R-1), C*10) for residual RAKI, else None.
    """

    w1: torch.Tensor
    w2: torch.Tensor
    w3: torch.Tensor
    linear: torch.Tensor | None

    @property
    def slices(self) -> int:
        return int(self.w1.shape[0])

    @property
    def networks(self) -> int:
        return int(self.w1.shape[1]) // FILTERS_1

    def parameters(self) -> list[torch.Tensor]:
        found = [self.w1, self.w2, self.w3]
        return found if self.linear is None else [*found, self.linear]

    def network(self, slice_index: int, network: int) -> list[torch.Tensor]:
        """The weights of one network of one slice, in `parameters` order."""
        flat = slice_index * self.networks + network
        rows = self.w1.shape[1] // self.networks
        found = [
            self.w1[slice_index, network * rows : (network + 1) * rows],
            self.w2[flat],
            self.w3[flat],
        ]
        if self.linear is None:
            return found
        rows = self.linear.shape[1] // self.networks
        return [*found, self.linear[slice_index, network * rows : (network + 1) * rows]]


def initial_weights(
    channels: int,
    acceleration: int,
    *,
    seed: int,
    outputs: Sequence[int],
    slices: int,
    residual: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> Weights:
    """Seeded initial weights for the networks of `outputs`, the same for every slice.

    The weights of all `channels` networks are drawn in one fixed order and the requested
    ones selected, so a network starts from the same weights whether it is trained alone or
    in a batch. The scale is PyTorch's default for convolutions, U(+-1/sqrt(fan-in)). For
    residual RAKI the last CNN layer starts at zero, so training starts from the linear
    branch alone (which `fit_linear` sets to its least-squares solution).
    """
    generator = torch.Generator().manual_seed(seed)
    missing = acceleration - 1
    fan_in = channels * KERNEL_1[0] * KERNEL_1[1]

    def draw(*shape: int, fan: int) -> torch.Tensor:
        values = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
        return values / math.sqrt(fan)

    w1 = draw(channels, FILTERS_1, fan_in, fan=fan_in)
    w2 = draw(channels, FILTERS_2, FILTERS_1, fan=FILTERS_1)
    w3 = draw(channels, TAPS_3 * missing, FILTERS_2, fan=FILTERS_2 * TAPS_3)
    if residual:
        w3.zero_()
    index = torch.as_tensor(list(outputs), dtype=torch.long)

    def place(values: torch.Tensor, *, per_slice: bool) -> torch.Tensor:
        chosen = values[index]
        shape = (1, -1, chosen.shape[-1]) if per_slice else (-1, *chosen.shape[1:])
        repeated = chosen.reshape(shape).repeat((slices, 1, 1))
        return repeated.to(device=device, dtype=dtype).requires_grad_()

    linear = torch.zeros(channels, missing, fan_in, dtype=torch.float64)
    return Weights(
        w1=place(w1, per_slice=True),
        w2=place(w2, per_slice=False),
        w3=place(w3, per_slice=False),
        linear=place(linear, per_slice=True) if residual else None,
    )


def patches(inputs: torch.Tensor, *, dilation: int) -> torch.Tensor:
    """Layer-1 patch matrix (slices, C*10, positions) of inputs (slices, C, readout, PE)."""
    return functional.unfold(inputs, KERNEL_1, dilation=(1, dilation))


def forward(
    weights: Weights,
    columns: torch.Tensor,
    grid: tuple[int, int],
    *,
    dilation: int,
    rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CNN and linear-branch outputs, each (slices, networks, R-1, readout, PE), for inference.

    `columns` is the patch matrix of `patches`, `grid` the (readout, PE) shape of the
    layer-1 positions it enumerates. Output (x, p) predicts the lines after input line p at
    input readout point x + 3. Layer-1 filters of rank `rank` (trained on that many
    principal components) are applied in factored form, the patches projected first.
    """
    slices, networks = weights.slices, weights.networks
    rows, cols = grid
    out_rows, out_cols = output_shape(grid, dilation)
    missing = weights.w3.shape[1] // TAPS_3

    w1, inputs = weights.w1, columns
    if rank is not None and rank < w1.shape[2]:
        w1, basis = _factored(w1, rank)
        inputs = torch.bmm(basis, columns)
    hidden = torch.relu(torch.bmm(w1, inputs))
    hidden = hidden.view(slices * networks, FILTERS_1, rows * cols)
    hidden = torch.relu(torch.bmm(weights.w2, hidden))
    taps = torch.bmm(weights.w3, hidden).view(slices * networks, TAPS_3, missing, rows, cols)
    cnn = shift_sum(taps, dilation).view(slices, networks, missing, out_rows, out_cols)
    if weights.linear is None:
        return cnn, None
    linear = torch.bmm(weights.linear, columns).view(slices, networks, missing, rows, cols)
    # The 5x2 kernel at layer-1 position (x + 1, p) reads readout x + 1 ... x + 5 of lines
    # p and p + R: centred on the CNN's target point x + 3, on both sides of its gap.
    return cnn, linear[..., 1 : 1 + out_rows, :out_cols]


def _factored(w1: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w1 (slices, rows, F) of rank <= `rank` as w1 @ basis^T (slices, rows, rank) and its
    orthonormal row basis (slices, rank, F): exact up to rounding."""
    _, vectors = torch.linalg.eigh((w1.transpose(1, 2) @ w1).double())
    basis = vectors.flip(-1)[..., :rank].to(w1.dtype)
    return w1 @ basis, basis.transpose(1, 2).contiguous()


def targets(acs: torch.Tensor, outputs: Sequence[int], acceleration: int) -> torch.Tensor:
    """Training targets (slices, networks, R-1, readout, PE) cut from the ACS block."""
    grid = (acs.shape[2] - (KERNEL_1[0] - 1), acs.shape[3] - (KERNEL_1[1] - 1) * acceleration)
    rows, cols = output_shape(grid, acceleration)
    chosen = acs[:, list(outputs)]
    lines = [
        chosen[:, :, MARGIN : MARGIN + rows, 1 + offset : 1 + offset + cols]
        for offset in range(acceleration - 1)
    ]
    return torch.stack(lines, dim=2)


def output_shape(grid: tuple[int, int], dilation: int) -> tuple[int, int]:
    """(readout, PE) positions of the outputs for layer-1 positions `grid`."""
    return grid[0] - (KERNEL_3[0] - 1), grid[1] - (KERNEL_3[1] - 1) * dilation


def tap_offsets(dilation: int) -> list[tuple[int, int]]:
    """(readout, phase-encode) offset of each layer-3 tap, in weight order."""
    return [(dx, dy * dilation) for dx in range(KERNEL_3[0]) for dy in range(KERNEL_3[1])]


def shift_sum(taps: torch.Tensor, dilation: int) -> torch.Tensor:
    """Layer 3's taps (N, 6, R-1, rows, cols) shifted into place and summed."""
    rows, cols = output_shape((taps.shape[-2], taps.shape[-1]), dilation)
    # Summed in at least single precision: the products' rounding stays in the products.
    dtype = torch.promote_types(taps.dtype, torch.float32)
    total = taps[:, 0, :, :rows, :cols].to(dtype, copy=True)
    for tap, (dx, shift) in enumerate(tap_offsets(dilation)):
        if tap:
            total.add_(taps[:, tap, :, dx : dx + rows, shift : shift + cols])
    return total


def spread(
    grad: torch.Tensor,
    grid: tuple[int, int],
    dilation: int,
    *,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """The adjoint of `shift_sum`: (N, R-1, out rows, out cols) to (N, 6, R-1, rows, cols),
    in a buffer of `workspace` when given."""
    rows, cols = grad.shape[-2:]
    count, missing = grad.shape[:2]
    if workspace is None:
        found = grad.new_zeros(count, TAPS_3, missing, *grid)
    else:
        buffer = workspace.get("spread", (count, TAPS_3 * missing, grid[0] * grid[1]), grad)
        found = buffer.zero_().view(count, TAPS_3, missing, *grid)
    for tap, (dx, shift) in enumerate(tap_offsets(dilation)):
        found[:, tap, :, dx : dx + rows, shift : shift + cols] = grad
    return found


# The products that write the largest activations (networks*32 x positions) write them into
# rows of a multiple of this many elements: with rows of an odd length (3843 positions at
# R = 3) MKL's single-precision product ran at 100 instead of 150 GFLOPS on 2 AVX2 cores.
ROW_ALIGNMENT = 16


class Workspace:
    """Buffers a training step writes its largest activations into, kept from step to step.

    A fresh 15 MB activation a step is a fresh mapping of memory to fault in page by page;
    kept buffers with aligned rows (`ROW_ALIGNMENT`) cost neither that nor the slow
    product. A buffer is reused only within one step, which is over before the next begins.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
        """A (a, b, c) tensor named `name`, of `like`'s dtype and device, rows aligned."""
        key = (name, like.dtype, like.device)
        a, b, c = shape
        padded = -(-c // ROW_ALIGNMENT) * ROW_ALIGNMENT
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < a * b * padded:
            buffer = torch.empty(a * b * padded, dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[: a * b * padded].view(a, b, padded)[..., :c]


def _product(a: torch.Tensor, b: torch.Tensor, workspace: Workspace, name: str) -> torch.Tensor:
    """torch.bmm(a, b) written into the workspace buffer `name`."""
    out = workspace.get(name, (a.shape[0], a.shape[1], b.shape[2]), a)
    return torch.bmm(a, b, out=out)


@dataclass(frozen=True)
class Batch:
    """What a training step reads: the fixed inputs and targets of the slices of a batch.

    `columns` (slices, features, positions) in the dtype of the products; `linear_columns`
    (slices, C*10, out positions) the residual branch's inputs at the output positions, or
    None; `wanted` (slices, networks, R-1, out rows, out cols); `loss_weight` (out rows,
    out cols): 1/count on the positions trained on, 0 on the held-out ones.
    """

    columns: torch.Tensor
    linear_columns: torch.Tensor | None
    wanted: torch.Tensor
    loss_weight: torch.Tensor
    grid: tuple[int, int]
    dilation: int
    linear_weight: float = 0.0
    workspace: Workspace = field(default_factory=Workspace, compare=False, repr=False)


@torch.no_grad()
def forward_backward(
    weights: list[torch.Tensor], batch: Batch
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Squared errors (slices, networks, out rows, out cols), summed over the R-1 lines, and
    the gradients of the loss, in `weights` order ([w1, w2, w3] or [w1, w2, w3, linear]).
    The gradients are written out, so no autograd graph is recorded.

    The loss is the sum over networks of each network's mean squared error over the R-1
    lines and the positions `loss_weight` trains on (residual RAKI: of the sum of both
    branches, plus `linear_weight` times the linear branch's own).
    """
    w1, w2, w3 = weights[:3]
    linear = weights[3] if len(weights) > 3 else None
    columns, dtype = batch.columns, batch.columns.dtype
    slices, networks, missing, out_rows, out_cols = batch.wanted.shape
    rows, cols = batch.grid

    # In place, into kept buffers: no allocation of the largest activations per step.
    workspace = batch.workspace
    hidden_1 = _product(w1.to(dtype), columns, workspace, "hidden_1").relu_()
    hidden_1 = hidden_1.view(slices * networks, w2.shape[2], rows * cols)
    hidden_2 = _product(w2.to(dtype), hidden_1, workspace, "hidden_2").relu_()
    taps = _product(w3.to(dtype), hidden_2, workspace, "taps")
    taps = taps.view(-1, TAPS_3, missing, rows, cols)
    cnn = shift_sum(taps, batch.dilation).view(batch.wanted.shape)
    error = cnn - batch.wanted
    linear_error = None
    if linear is not None and batch.linear_columns is not None:
        own = torch.bmm(linear, batch.linear_columns).view(batch.wanted.shape)
        error = error + own
        linear_error = own - batch.wanted
    squared = error.square().sum(dim=2)

    # d loss / d prediction of network n: 2 e / ((R-1) * count) on the trained positions.
    scale = batch.loss_weight * (2.0 / missing)
    grad_out = error * scale
    grads_linear: list[torch.Tensor] = []
    if linear_error is not None and batch.linear_columns is not None:
        grad_linear = grad_out
        if batch.linear_weight:
            grad_linear = grad_linear + batch.linear_weight * linear_error * scale
        grad_linear = grad_linear.reshape(slices, networks * missing, out_rows * out_cols)
        grads_linear = [torch.bmm(grad_linear, batch.linear_columns.transpose(1, 2))]
    grad_taps = spread(
        grad_out.view(-1, missing, out_rows, out_cols),
        batch.grid,
        batch.dilation,
        workspace=workspace,
    )
    grad_taps = grad_taps.view(slices * networks, TAPS_3 * missing, rows * cols).to(dtype)
    grad_w3 = torch.bmm(grad_taps, hidden_2.transpose(1, 2))
    grad_2 = _product(w3.to(dtype).transpose(1, 2), grad_taps, workspace, "grad_2")
    grad_2 = _relu_backward(grad_2, hidden_2, out=grad_2)
    grad_w2 = torch.bmm(grad_2, hidden_1.transpose(1, 2))
    grad_1 = _product(w2.to(dtype).transpose(1, 2), grad_2, workspace, "grad_1")
    grad_1 = _relu_backward(grad_1, hidden_1, out=grad_1).view(slices, -1, rows * cols)
    grad_w1 = torch.bmm(grad_1, columns.transpose(1, 2))
    grads = [grad_w1.to(w1.dtype), grad_w2.to(w2.dtype), grad_w3.to(w3.dtype)]
    return squared, grads + grads_linear


def _relu_backward(
    grad: torch.Tensor, output: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`grad` where the ReLU's `output` is positive, else 0 (one pass, as autograd's), into
    `out` (which may be `grad` itself) when given."""
    if out is None:
        found: torch.Tensor = torch.ops.aten.threshold_backward(grad, output, 0)
        return found
    written: torch.Tensor = torch.ops.aten.threshold_backward.grad_input(
        grad, output, 0, grad_input=out
    )
    return written
