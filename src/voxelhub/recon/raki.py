"""RAKI: scan-specific CNN k-space interpolation trained on the ACS block of each slice.

Akcakaya et al., "Scan-specific robust artificial-neural-networks for k-space interpolation
(RAKI) reconstruction: database-free deep learning for fast imaging", MRM 2019. Per slice and
per real output channel a three-layer CNN (5x2 conv, 32 filters, ReLU; 1x1 conv, 8 filters,
ReLU; 3x2 conv to the R-1 missing lines; phase-encode taps dilated by R) is trained with Adam
on the fully sampled ACS block, applied to the undersampled k-space, the acquired lines put
back and the coils combined by root-sum-of-squares. All networks of a slice (and, on a GPU,
of several slices) train as one batched computation; see `_raki_net`.

Training (`_raki_train`): Adam with the learning rate falling from 1e-2 to 0 along a half
cosine, in bfloat16 products where the hardware has them, on the 128 readout points (96 on a
CPU without bfloat16) around the ACS's energy peak of a calibration block (on the CPU below R
= 5 their two halves take turns, one a step: `readout_batches`): the ACS block widened by 20
lines on each side whose missing lines GRAPPA fills around the acquired grid lines
(`calibration_extension`; 0: the ACS block alone, as the paper). 24 ACS lines are few rows to
train on; the widened block made RAKI better than our GRAPPA at R = 3-6 on the phantom below
(R = 4: NMSE .0081 against GRAPPA's .0101 and .0123 on the ACS alone; R = 6: .0184 against
.0189 and .0259; `_raki_net.CALIBRATION_EXTENSION`). At R = 2 the ACS block alone is enough
and better: there the networks train on it for 1000 steps, on its 128 leading principal
components (`_raki_net.WIDENED_FROM_ACCELERATION`). Layer 1 learns on every one of the
2*Nc*10 patch components of a widened block and on the 64 leading principal components of the
ACS block alone from R = 3 (`features` "auto"). At R = 3 and 4 every row trains the networks
for 400 steps;
from R = 5 on the outermost fifth of the widened block's rows (a tenth of the ACS block's) is
held out, each network keeps its weights of least held-out error and the batch stops once the
summed held-out error has fallen by less than 0.1 % in 40 steps (at most 200 steps): there the
networks fit the noise of what they train on, below it they need its every row
(`_raki_net.Options`). `FULL_LENGTH` is the paper's training (1000 constant steps at 3e-3 on
the ACS block, every component, no held-out rows, whole steps). On the 15-coil 640 x 320
phantom (24 ACS lines, SNR 40) on 2 AVX2 cores the defaults take 12-16 s a slice,
`FULL_LENGTH` 27-38 s for 1.5x their NMSE at R = 4 and 1.6x at R = 5; on 2 cores with bfloat16
products 4-10 s, depending on the machine; figures in bench/README.md, recon.py.

Borders and irregular gaps: the 3 readout points at each edge are predicted from
zero-padded neighbours (the k-space periphery). Lines whose nearest acquired lines are not R
apart (the gaps before the first and after the last acquired line, and beside an ACS block
off the sampling grid) are filled by GRAPPA kernels of their own geometry calibrated on the
same ACS (`irregular_gaps` "grappa"): there an acquired ACS line is nearer than the grid
lines the networks read (at R = 5 on the phantom below this took RAKI's NMSE from 0.0206 to
0.0188). "network" predicts them from the grid lines too, zero-padded at the borders. An ACS
block off the sampling grid is fine: training uses every line of it, and every acquired line
is put back as measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from voxelhub.recon import _raki_net
from voxelhub.recon.model import ComplexArray, KSpace, Reconstruction, Sampling

DEFAULT_ITERATIONS: int | None = None  # by R and held-out rows (`_raki_net.Options`)
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_TRAINING_READOUT: int | str | None = "auto"  # 128; 96 on a float32 CPU
DEFAULT_SCHEDULE = "cosine"
DEFAULT_HELD_OUT: float | None = None  # chosen by the acceleration (`_raki_net.Options`)
DEFAULT_PATIENCE = 40
DEFAULT_FEATURES: int | str | None = "auto"  # all on a widened block, else 128 or 64
DEFAULT_IRREGULAR_GAPS = "grappa"  # lines off the grid by GRAPPA (`_raki_net.IRREGULAR_GAPS`)

# The paper's training, the quality bar of the defaults: Adam at a constant 3e-3 for 1000
# iterations on every patch component, every ACS row (of the ACS block alone) trained on, no
# early stop. Only the readout window stays ours (`training_readout` 128): the whole ACS
# block costs 5x as much again.
FULL_LENGTH: Mapping[str, object] = MappingProxyType(
    {
        "iterations": 1000,
        "learning_rate": 3e-3,
        "schedule": "constant",
        "held_out": 0.0,
        "patience": None,
        "features": None,
        "calibration_extension": 0,
        "training_readout": 128,
        "readout_batches": 1,
    }
)


def reconstruct_raki(
    kspace: KSpace,
    *,
    iterations: int | None = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    slices_per_batch: int | None = None,
    training_readout: int | str | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    schedule: str = DEFAULT_SCHEDULE,
    held_out: float | None = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | str | None = DEFAULT_FEATURES,
    irregular_gaps: str = DEFAULT_IRREGULAR_GAPS,
    calibration_extension: int | None = None,
    readout_batches: int | None = None,
) -> Reconstruction:
    """RAKI magnitude images (slices x rows x columns, float32) of an undersampled acquisition.

    `device` None picks the GPU when present; `slices_per_batch` slices train together (None: on
    a GPU as many as fit in its free memory, at most 32; 1 on the CPU); `training_readout`
    central readout points of the ACS train the networks (None: all of them; "auto": 128, 96 on
    a CPU computing in float32, `_raki_net.TRAINING_READOUT_FLOAT32_CPU`);
    `precision` "float32" or "bfloat16" (None: the hardware's native one); `threads` CPU threads
    (None: one per core; 1 is much faster where other processes share the cores); `schedule` the
    learning rate's course, "cosine" (falling to 0) or "constant"; `held_out` the fraction of
    the calibration block's rows kept for early stopping (0: none; None: from R = 5 on 0.2 of a
    widened block, 0.1 of the ACS block alone, none below), `iterations` the most training steps
    (None: 1000 at R = 2, else 400, or 200 with held-out rows; see `_raki_net.Options`),
    `patience` the steps without 0.1 % improvement before the training stops (None: never
    early), `features` the principal components layer 1 learns on (None: all; "auto": all on
    a widened block, 128 on the ACS block alone at R = 2, else 64),
    `irregular_gaps` "grappa" (GRAPPA kernels for the lines off the regular grid: beside the ACS
    block, at the phase-encode edges) or "network" (the networks predict them too),
    `calibration_extension` lines on each side of the ACS block, filled by GRAPPA, added to the
    block the networks train on (None: 20, `_raki_net.CALIBRATION_EXTENSION`, from R = 3 and
    0 at R = 2; 0: the ACS block alone), `readout_batches` the parts of the training window,
    cut along the readout, that the steps take in turn (None: 2 on the CPU without held-out
    rows, halving the time, else 1: every step on the whole window). `**FULL_LENGTH` trains
    as the paper did. The same seed gives the same images on the same machine.

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
        schedule=schedule,
        held_out=held_out,
        patience=patience,
        features=features,
        irregular_gaps=irregular_gaps,
        calibration_extension=calibration_extension,
        readout_batches=readout_batches,
    )
    return _raki_net.reconstruct(kspace, options, method="raki")


def fill(
    kspace_slice: ComplexArray,
    sampling: Sampling,
    *,
    iterations: int | None = DEFAULT_ITERATIONS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    device: str | None = None,
    training_readout: int | str | None = DEFAULT_TRAINING_READOUT,
    precision: str | None = None,
    threads: int | None = None,
    schedule: str = DEFAULT_SCHEDULE,
    held_out: float | None = DEFAULT_HELD_OUT,
    patience: int | None = DEFAULT_PATIENCE,
    features: int | str | None = DEFAULT_FEATURES,
    irregular_gaps: str = DEFAULT_IRREGULAR_GAPS,
    calibration_extension: int | None = None,
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
        schedule=schedule,
        held_out=held_out,
        patience=patience,
        features=features,
        irregular_gaps=irregular_gaps,
        calibration_extension=calibration_extension,
    )
    return _raki_net.fill_slice(kspace_slice, sampling, options=options, residual=False)


def register() -> None:
    """Add "raki" to the reconstruction methods (`voxelhub.recon.methods`); runs on import,
    which is how the registry loads its plugin modules."""
    from voxelhub.recon.methods import register_method

    register_method("raki", reconstruct_raki)


register()
