"""`voxelhub train segmentation`: train a U-Net on an archive's labelled cases.

A case takes part when it holds an image under the image interface (default `image`: an
image value such as .mha/.nii.gz, or a DICOM series) and a label mask under the label
interface (default `label`: an image value of integers, 0 for background, 1…N for the
structures, on the image's grid or resampled onto it; or a DICOM SEG series that references
the image series, segment n as label n, its segment labels naming the labels). Other cases
are listed as skipped, with the reason. The result is a MONAI bundle folder (see
`voxelhub.segment.train`), which is uploaded as an algorithm package like any other bundle.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.algorithms import io
from voxelhub.archives.models import Archive, Case, CaseValue
from voxelhub.archives.values import ValueKind
from voxelhub.core.db import engine_for
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.objects import ObjectStore
from voxelhub.core.runtime import Runtime, build_runtime
from voxelhub.core.settings import Settings
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.inputs import InputImage
from voxelhub.segment.train import TrainingCase, TrainingError, TrainingSettings

train_app = typer.Typer(help="Train models on the cases of an archive.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()
CT_WINDOW = (-57.0, 164.0)  # abdominal organs, in HU (as MONAI's spleen model)


@dataclass(frozen=True)
class Skipped:
    """A case that could not take part, and why."""

    case: str
    reason: str


@dataclass(frozen=True)
class TrainingData:
    cases: list[TrainingCase]
    skipped: list[Skipped]
    modality: str | None
    # Names of labels 1…N as the first DICOM SEG label gave them (its segment labels).
    label_names: tuple[str, ...] = ()


@contextmanager
def _opened(settings: Settings) -> Iterator[Runtime]:
    """The runtime for reading the archive; an embedded database started here stops after."""
    runtime = build_runtime(settings, start_database=False)
    started_here = False
    if runtime.embedded_pg is not None:
        started_here = runtime.embedded_pg.running_pid() is None
        runtime.embedded_pg.start()
    try:
        yield runtime
    finally:
        engine_for(runtime.database_url).dispose()
        if started_here and runtime.embedded_pg is not None:
            runtime.embedded_pg.stop()


def _archive(db: Session, name: str) -> Archive:
    archive = db.scalar(select(Archive).where(Archive.name == name))
    if archive is None:
        try:
            archive = db.get(Archive, uuid.UUID(name))
        except ValueError:
            archive = None
    if archive is None:
        raise typer.BadParameter(f"no archive named {name!r}; list them in the web UI or API")
    return archive


def _read_value(
    db: Session,
    store: ObjectStore,
    archive: Archive,
    row: CaseValue,
    folder: Path,
    *,
    image: InputImage | None = None,
) -> tuple[InputImage, tuple[str, ...]]:
    """The value as an image (with its modality and slices when it is a DICOM series).

    With `image` (the case's image, read first), a DICOM SEG value becomes a label map on
    that image's grid; its segment labels come second (nothing for other values).
    """
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    from voxelhub.segment.inputs import read_path, read_seg_labels

    if row.kind == ValueKind.dicom_series:
        series = folder / row.interface
        series.mkdir(parents=True)
        io._write_series(db, store, archive.id, row.value["series_instance_uid"], series)
        seg = read_seg_labels(series, image) if image is not None else None
        if seg is not None and image is not None:
            labels = sitk.GetImageFromArray(seg.labels)
            labels.CopyInformation(image.image)  # type: ignore[no-untyped-call]
            return InputImage(labels, str(series), modality="SEG"), seg.names
        found = read_path(series)
        if len(found) != 1:
            raise TrainingError(f"{row.interface!r} holds {len(found)} image series, not one")
        return found[0], ()
    if row.kind == ValueKind.image:
        name = str(row.value.get("filename") or "image.mha")
        path = folder / f"{row.interface}-{Path(name).name}"
        with path.open("wb") as target:
            for chunk in store.stream(row.object_keys[0]):
                target.write(chunk)
        return InputImage(sitk.ReadImage(str(path)), str(path)), ()
    raise TrainingError(f"{row.interface!r} is a {row.kind} value, not an image or DICOM series")


def _on_grid(label: Any, image: Any) -> Any:
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    if label.GetSize() == image.GetSize():
        return label
    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)  # type: ignore[no-untyped-call]


def load_training_data(
    db: Session,
    store: ObjectStore,
    archive: Archive,
    *,
    image_interface: str,
    label_interface: str,
    scratch: Path,
) -> TrainingData:
    """Every case of the archive with both values, as arrays; the rest with reasons."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    cases, skipped, modalities = [], [], set()
    names: tuple[str, ...] = ()
    for case in db.scalars(select(Case).where(Case.archive_id == archive.id).order_by(Case.title)):
        rows = {
            v.interface: v
            for v in db.scalars(
                select(CaseValue).where(
                    CaseValue.case_id == case.id,
                    CaseValue.interface.in_((image_interface, label_interface)),
                )
            )
        }
        missing = [i for i in (image_interface, label_interface) if i not in rows]
        if missing:
            skipped.append(Skipped(case.title, f"no value {' or '.join(map(repr, missing))}"))
            continue
        folder = scratch / str(case.id)
        folder.mkdir()
        try:
            read, _ = _read_value(db, store, archive, rows[image_interface], folder)
            label, seg_names = _read_value(
                db, store, archive, rows[label_interface], folder, image=read
            )
            image, modality = read.image, read.modality
            mask = sitk.GetArrayFromImage(_on_grid(label.image, image))
            if not np.issubdtype(mask.dtype, np.integer):
                mask = np.rint(mask)
            cases.append(
                TrainingCase(
                    case.title,
                    sitk.GetArrayFromImage(image).astype(np.float32),
                    mask.astype(np.uint8),
                    spacing=tuple(float(s) for s in reversed(image.GetSpacing())),  # type: ignore[arg-type, no-untyped-call]
                )
            )
        except (TrainingError, SegmentError, VoxelhubError, RuntimeError, ValueError) as err:
            skipped.append(Skipped(case.title, str(err)))
            continue
        if modality:
            modalities.add(modality)
        names = names or seg_names
    only = modalities.pop() if len(modalities) == 1 else None
    return TrainingData(cases, skipped, only, names)


def _triple(text: str | None, name: str) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise typer.BadParameter(f"--{name} takes three integers, e.g. 32,32,32") from err
    if len(values) != 3:
        raise typer.BadParameter(f"--{name} takes three integers, e.g. 32,32,32")
    return values[0], values[1], values[2]


def _window(text: str | None, modality: str | None) -> tuple[float, float] | None:
    if not text:
        return CT_WINDOW if modality == "CT" else None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as err:
        raise typer.BadParameter("--window takes MIN,MAX, e.g. -57,164") from err
    return low, high


@train_app.command("segmentation")
def train_segmentation_command(
    archive: Annotated[str, typer.Option(help="Name (or id) of the archive to train on")],
    *,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training cases")] = 30,
    output: Annotated[Path | None, typer.Option(help="Bundle folder to write")] = None,
    roi: Annotated[
        str | None, typer.Option(help="Patch size X,Y,Z in voxels (multiples of 8)")
    ] = None,
    image_interface: Annotated[str, typer.Option(help="Case value holding the image")] = "image",
    label_interface: Annotated[str, typer.Option(help="Case value holding the mask")] = "label",
    labels: Annotated[
        str | None, typer.Option(help="Names of labels 1…N, comma separated (e.g. spleen)")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Intensity window MIN,MAX (default: -57,164 for CT)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, crops and weights")] = 0,
    home: Annotated[
        Path | None, typer.Option("--home", envvar="VOXELHUB_HOME", help="Data directory")
    ] = None,
) -> None:
    """Train a U-Net on the archive's cases that hold an image and a label mask.

    Each case needs an IMAGE_INTERFACE value (an image such as .mha/.nii.gz, or a DICOM
    series) and a LABEL_INTERFACE value (an integer mask image: 0 background, 1…N
    structures). A fifth of the cases (at least one) validates; Dice is shown per epoch;
    the best epoch is written as a MONAI bundle to --output.
    """
    from voxelhub.core.db import session_scope
    from voxelhub.core.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="vxh-train-data-") as scratch:
        try:
            settings = load_settings(home)
            with _opened(settings) as runtime, session_scope(runtime.database_url) as db:
                row = _archive(db, archive)
                data = load_training_data(
                    db,
                    runtime.store,
                    row,
                    image_interface=image_interface,
                    label_interface=label_interface,
                    scratch=Path(scratch),
                )
                name = row.name
        except VoxelhubError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(code=2) from err
    _report_skipped(data.skipped)
    target = output or Path(f"bundle-{name}".replace(" ", "-"))
    try:
        training = TrainingSettings(
            epochs=epochs,
            seed=seed,
            intensity_range=_window(window, data.modality),
            modality=data.modality,
            labels=tuple(n.strip() for n in labels.split(",")) if labels else data.label_names,
            **({"roi": r} if (r := _triple(roi, "roi")) else {}),  # type: ignore[arg-type]
        )
        result = _train(data.cases, target, training)
    except TrainingError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(code=2) from err
    out.print(
        f"bundle written to {result.path}: best validation Dice {result.best_dice:.3f} at epoch "
        f"{result.best_epoch} ({len(result.training_cases)} training, "
        f"{len(result.validation_cases)} validation cases)"
    )


def _report_skipped(skipped: list[Skipped]) -> None:
    if not skipped:
        return
    table = Table(title=f"{len(skipped)} case(s) skipped")
    table.add_column("case")
    table.add_column("reason")
    for item in skipped:
        table.add_row(item.case, item.reason)
    console.print(table)


def _train(cases: list[TrainingCase], target: Path, settings: TrainingSettings) -> Any:
    from voxelhub.segment.train import EpochResult, train_segmentation

    with _progress() as progress:
        task = progress.add_task("training", total=settings.epochs, dice=0.0, best=0.0)
        best = 0.0

        def on_epoch(result: EpochResult) -> None:
            nonlocal best
            best = max(best, result.dice)
            progress.update(task, advance=1, dice=result.dice, best=best, loss=result.loss)

        return train_segmentation(cases, target, settings, on_epoch=on_epoch)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("Dice {task.fields[dice]:.3f} (best {task.fields[best]:.3f})"),
        TimeElapsedColumn(),
        console=console,
    )
