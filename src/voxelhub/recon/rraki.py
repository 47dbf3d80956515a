"""Residual RAKI: a linear GRAPPA-like convolution plus the RAKI CNN on what it leaves.

Zhang et al., "Residual RAKI: A hybrid linear and non-linear approach for scan-specific
k-space deep learning", NeuroImage 2022. Per slice and real output channel the prediction of
the R-1 missing lines is the sum of a linear 5x2 kernel over the two lines bordering the gap
(phase-encode dilated by R) and the three-layer RAKI CNN, trained jointly on the ACS block
with the loss |y - (G(x) + F(x))|^2 + lambda |y - G(x)|^2; lambda > 0 (the paper's extra term)
keeps the linear part a GRAPPA kernel by itself, the default 0 trains the sum alone.

The linear branch is our GRAPPA kernel (`grappa.fit_kernel` on the whole ACS block, the same
Tikhonov lambda 0.1 relative to the largest singular value) written as a real map on the
stacked real/imaginary patches, and stays fixed by default (`linear_learning_rate` 0); the
CNN's last layer starts at zero, so training starts from the GRAPPA reconstruction and the
CNN learns only the residual. A linear branch refitted in real arithmetic on the ACS (the
previous start) amplified noise at R >= 5 (NMSE 0.035 against GRAPPA's 0.019 at R = 6).

Both branches train on the ACS block widened by 20 lines on each side, filled by GRAPPA
around the acquired grid lines (`calibration_extension`, `_raki_net.CALIBRATION_EXTENSION`);
from R = 5 on its outer fifth is held out. On the ACS block alone the CNN fitted its noise
from R = 5 on and early stopping kept it at its zero start, so residual RAKI equalled
GRAPPA there. Widened, residual RAKI beat GRAPPA at R = 3-6 on the phantom (R = 4: NMSE
.0080 against .0101; R = 5 and 6 by 2-5 % on three phantom seeds, SSIM at least as high);
from R = 5 nearly all of that gain is the linear branch's, fitted on the widened block (the
CNN's share is under 0.5 %). Batching, borders, the GRAPPA kernels
for the lines off the regular grid (`irregular_gaps`) and the other defaults are as in
`raki`.
"""

from __future__ import annotations

from voxelhub.recon import _raki_net
from voxelhub.recon.model import ComplexArray, KSpace, Reconstruction, Sampling
from voxelhub.recon.raki import (
    DEFAULT_HELD_OUT,
    DEFAULT_IRREGULAR_GAPS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE,
    DEFAULT_SCHEDULE,
)

# 200 steps on every patch component, 1000 on 128 components at R = 2
# (`_raki_net.ITERATIONS_RESIDUAL`, `_raki_net.WIDENED_FROM_ACCELERATION`).
DEFAULT_ITERATIONS: int | None = None
# 96 readout points of the widened block rather than RAKI's 128: the same images within 0.3 %
# (one slice, seed 1, NMSE 128 -> 96: R = 2 .00086 -> .00086, R = 3 .00313 -> .00314, R = 4
# .00796 -> .00803, R = 5 .01479 -> .01481, R = 6 .01843 -> .01842) in two thirds of the time
# on 2 CPU cores (R = 2-4: 15-20 s -> 12-13 s a slice).
DEFAULT_TRAINING_READOUT = 96
DEFAULT_FEATURES: int | str | None = "auto"
DEFAULT_LINEAR_WEIGHT = 0.0
DEFAULT_LINEAR_REGULARIZATION = 0.1


def reconstruct_rraki(
    kspace: KSpace,
    *,
    iterations: int | None = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    slices_per_batch: int | None = None,
    training_readout: int | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    linear_learning_rate: float | None = None,
    linear_weight: float = DEFAULT_LINEAR_WEIGHT,
    linear_regularization: float = DEFAULT_LINEAR_REGULARIZATION,
    schedule: str = DEFAULT_SCHEDULE,
    held_out: float | None = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | str | None = DEFAULT_FEATURES,
    irregular_gaps: str = DEFAULT_IRREGULAR_GAPS,
    calibration_extension: int | None = None,
    readout_batches: int | None = None,
) -> Reconstruction:
    """Residual-RAKI magnitude images (slices x rows x columns, float32).

    `linear_regularization` is the Tikhonov lambda of the linear branch's GRAPPA fit
    (relative to the largest singular value of the calibration matrix), `linear_learning_rate`
    its learning rate (None: 0, fixed), `linear_weight` the weight of its own error in the
    loss; `calibration_extension` None widens the training block by 20 GRAPPA-filled
    lines on each side from R = 3 on (0: the ACS block alone, the default at R = 2), and
    `held_out` None holds out the outer fifth of it from R = 5 on (none below; on the ACS
    block alone the outer 35 %); the other options are `raki.reconstruct_raki`'s (here, from
    R = 3, layer 1 learns on every patch component by default, 200 steps at most; at R = 2 on
    128 components for 1000 steps, as RAKI; always on 96 readout points).

    >>> from voxelhub.recon.phantom import PhantomSpec, simulate
    >>> acq = simulate(PhantomSpec(readout=32, phase_encode=32, coils=4, acs_lines=12))
    >>> reconstruct_rraki(acq.kspace, iterations=5).settings["linear_learning_rate"]
    0.0
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
        linear_learning_rate=linear_learning_rate,
        linear_weight=linear_weight,
        linear_regularization=linear_regularization,
        schedule=schedule,
        held_out=held_out,
        patience=patience,
        features=features,
        irregular_gaps=irregular_gaps,
        calibration_extension=calibration_extension,
        readout_batches=readout_batches,
    )
    return _raki_net.reconstruct(kspace, options, method="rraki")


def fill(
    kspace_slice: ComplexArray,
    sampling: Sampling,
    *,
    iterations: int | None = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    training_readout: int | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    linear_learning_rate: float | None = None,
    linear_weight: float = DEFAULT_LINEAR_WEIGHT,
    linear_regularization: float = DEFAULT_LINEAR_REGULARIZATION,
    schedule: str = DEFAULT_SCHEDULE,
    held_out: float | None = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | str | None = DEFAULT_FEATURES,
    irregular_gaps: str = DEFAULT_IRREGULAR_GAPS,
    calibration_extension: int | None = None,
) -> ComplexArray:
    """One slice's k-space (coils, readout, PE) with the missing lines predicted by rRAKI."""
    options = _raki_net.Options(
        iterations=iterations,
        learning_rate=learning_rate,
        seed=seed,
        device=device,
        training_readout=training_readout,
        precision=precision,
        threads=threads,
        linear_learning_rate=linear_learning_rate,
        linear_weight=linear_weight,
        linear_regularization=linear_regularization,
        schedule=schedule,
        held_out=held_out,
        patience=patience,
        features=features,
        irregular_gaps=irregular_gaps,
        calibration_extension=calibration_extension,
    )
    return _raki_net.fill_slice(kspace_slice, sampling, options=options, residual=True)


def register() -> None:
    """Add "rraki" to the reconstruction methods (`voxelhub.recon.methods`); runs on import,
    which is how the registry loads its plugin modules."""
    from voxelhub.recon.methods import register_method

    register_method("rraki", reconstruct_rraki)


register()
