"""RAKI: scan-specific CNN k-space interpolation trained on the ACS block of each slice.

Akcakaya et al., "Scan-specific robust artificial-neural-networks for k-space interpolation
(RAKI) reconstruction: database-free deep learning for fast imaging", MRM 2019. Per slice and
per real output channel a three-layer CNN (5x2 conv, 32 filters, ReLU; 1x1 conv, 8 filters,
ReLU; 3x2 conv to the R-1 missing lines; phase-encode taps dilated by R) is trained with Adam
on the fully sampled ACS block, applied to the undersampled k-space, the acquired lines put
back and the coils combined by root-sum-of-squares. All networks of a slice (and, on a GPU,
of several slices) train as one batched computation; see `_raki_net`.

Training (`_raki_train`): Adam with the learning rate falling from 1e-2 to 0 along a half
cosine over at most 200 steps, in bfloat16 products where the hardware has them, on the 128
readout points of the ACS around its energy peak; the outermost 20 % of the ACS rows are held
out and each network keeps its weights of least held-out error (the batch stops once the
summed held-out error has fallen by less than 0.1 % in 40 steps); layer 1 learns on the 64
leading principal components of the coil patches (`features`; None trains on all 2*Nc*10,
as the paper). The paper trained ~1000 iterations at 3e-3 on the whole ACS block. On the
15-coil 640 x 320 phantom (24 ACS lines, SNR 40, one slice per R) this takes 1-7 s per
slice on 2 CPU cores; without the held-out rows NMSE at R = 5 / 6 rises from 0.024 / 0.025
to 0.028 / 0.036, while at R = 4 they cost accuracy (0.0148 against 0.0130; 600 steps
without them 0.0120). Figures: bench/README.md, section recon.py.

Borders: gaps before the first and after the last acquired grid line, and the 3 readout
points at each edge, are predicted from zero-padded neighbours (the k-space periphery).
An ACS block off the sampling grid is fine: training uses every line of it, prediction the
grid lines, and every acquired line is put back as measured.
"""

from __future__ import annotations

from voxelhub.recon import _raki_net
from voxelhub.recon.model import ComplexArray, KSpace, Reconstruction, Sampling

DEFAULT_ITERATIONS = 200
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_TRAINING_READOUT = 128
DEFAULT_HELD_OUT = 0.2
DEFAULT_PATIENCE = 40
DEFAULT_FEATURES = 64


def reconstruct_raki(
    kspace: KSpace,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    slices_per_batch: int | None = None,
    training_readout: int | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    held_out: float = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | None = DEFAULT_FEATURES,
) -> Reconstruction:
    """RAKI magnitude images (slices x rows x columns, float32) of an undersampled acquisition.

    `device` None picks the GPU when present; `slices_per_batch` slices train together
    (default 8 on a GPU, 1 on the CPU); `training_readout` central readout points of the ACS
    train the networks (None: all of them); `precision` "float32" or "bfloat16" (None: the
    hardware's native one); `threads` CPU threads (None: one per core; 1 is much faster
    where other processes share the cores); `held_out` the fraction of ACS rows kept for
    early stopping (0: none), `patience` the steps without 0.1 % improvement before the
    training stops (None: never early), `features` the principal components layer 1 learns on (None:
    all). The same seed gives the same images on the same machine.

    >>> from voxelhub.recon.phantom import PhantomSpec, simulate
    >>> acq = simulate(PhantomSpec(readout=32, phase_encode=32, coils=4, acs_lines=12))
    >>> reconstruct_raki(acq.kspace, iterations=5).images.shape
    (1, 32, 32)
    """
    options = _raki_net.Options(
        iterations=iterations,
        learning_rate=learning_rate,
        seed=seed,
        device=device,
        slices_per_batch=slices_per_batch,
        training_readout=training_readout,
        precision=precision,
        threads=threads,
        held_out=held_out,
        patience=patience,
        features=features,
    )
    return _raki_net.reconstruct(kspace, options, method="raki")


def fill(
    kspace_slice: ComplexArray,
    sampling: Sampling,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    training_readout: int | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    held_out: float = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | None = DEFAULT_FEATURES,
) -> ComplexArray:
    """One slice's k-space (coils, readout, PE) with the missing lines predicted by RAKI.

    Acquired lines are returned exactly as given; see `_raki_net.fill` for the borders.
    """
    options = _raki_net.Options(
        iterations=iterations,
        learning_rate=learning_rate,
        seed=seed,
        device=device,
        training_readout=training_readout,
        precision=precision,
        threads=threads,
        held_out=held_out,
        patience=patience,
        features=features,
    )
    return _raki_net.fill_slice(kspace_slice, sampling, options=options, residual=False)


def register() -> None:
    """Add "raki" to the reconstruction methods (`voxelhub.recon.methods`); runs on import,
    which is how the registry loads its plugin modules."""
    from voxelhub.recon.methods import register_method

    register_method("raki", reconstruct_raki)


register()
