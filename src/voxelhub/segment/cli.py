"""`voxelhub segment`: run a segmentation model on a case without a server.

Registered in the main command line with `app.command("segment")(segment_command)`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from voxelhub.segment.errors import SegmentError

console = Console(stderr=True)
logger = logging.getLogger(__name__)


def segment_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="DICOM series folders, NIfTI or MHA files; role=path names a role "
            "(e.g. t1c=case/t1c.nii.gz) for multi-series models"
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the results")],
    *,
    bundle: Annotated[Path | None, typer.Option(help="MONAI bundle folder")] = None,
    model: Annotated[Path | None, typer.Option(help="TorchScript (.ts/.pt) or ONNX file")] = None,
    card: Annotated[Path | None, typer.Option(help="Model card (JSON) for --model")] = None,
    runtime: Annotated[
        str, typer.Option(help="eager, torchscript, onnx, compile, int8 or auto (measured)")
    ] = "auto",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads [default: all]")] = None,
    mask_format: Annotated[str, typer.Option(help="mha or nifti")] = "mha",
    seg_type: Annotated[str, typer.Option(help="DICOM SEG type: binary or labelmap")] = "binary",
) -> None:
    """Segment one case: writes mask, volumes.json and, for DICOM input, seg.dcm and sr.dcm."""
    try:
        _run(
            inputs,
            output,
            bundle=bundle,
            model=model,
            card=card,
            runtime=runtime,
            device=device,
            threads=threads,
            mask_format=mask_format,
            seg_type=seg_type,
        )
    except SegmentError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    except ModuleNotFoundError as err:
        if err.name not in _AI_PACKAGES:
            raise
        console.print(
            f"[bold red]error:[/] segmentation needs {err.name}, which is not installed: "
            + escape("install the deep-learning extra with pip install 'voxelhub[ai]'"),
            soft_wrap=True,
        )
        raise typer.Exit(code=2) from None


# What the `ai` extra installs; a missing one is a setup step, not a bug.
_AI_PACKAGES = frozenset({"torch", "monai", "onnx", "onnxruntime", "nibabel"})


def _run(
    specs: list[str],
    output: Path,
    *,
    bundle: Path | None,
    model: Path | None,
    card: Path | None,
    runtime: str,
    device: str,
    threads: int | None,
    mask_format: str,
    seg_type: str,
) -> None:
    from voxelhub.segment.inputs import assign_roles, read_inputs
    from voxelhub.segment.loading import load_model
    from voxelhub.segment.outputs import write_outputs

    if (bundle is None) == (model is None):
        raise SegmentError("give either --bundle DIR or --model FILE --card CARD.json.")
    if mask_format not in ("mha", "nifti"):
        raise SegmentError(f"--mask-format {mask_format!r}: use mha or nifti.")
    if seg_type not in ("binary", "labelmap"):
        raise SegmentError(f"--seg-type {seg_type!r}: use binary or labelmap.")
    path = bundle if bundle is not None else model
    assert path is not None  # one of them, checked above
    loaded = load_model(path, card=card, runtime=runtime, device=device, threads=threads)
    chosen = assign_roles(read_inputs(specs), loaded.metadata)
    start = time.perf_counter()
    try:
        labels = loaded.predict([item.image for item in chosen])
    except SegmentError:
        raise
    except Exception as err:  # a model's own code failing on this case
        logger.debug("prediction failed", exc_info=True)
        raise SegmentError(
            f"model {loaded.metadata.name!r} failed on this case: {type(err).__name__}: "
            f"{str(err).strip().splitlines()[-1] if str(err).strip() else 'no detail'}"
        ) from err
    seconds = time.perf_counter() - start
    format_: Literal["mha", "nifti"] = "nifti" if mask_format == "nifti" else "mha"
    files = write_outputs(
        output,
        labels,
        loaded.metadata,
        chosen,
        runtime=loaded.runtime,
        mask_format=format_,
        labelmap_seg=seg_type == "labelmap",
    )
    console.print(
        f"{escape(loaded.metadata.name)}: segmented in {seconds:.1f} s with runtime "
        f"{loaded.runtime}; wrote {', '.join(p.name for p in vars(files).values() if p)} "
        f"to {escape(str(output))}"
    )
