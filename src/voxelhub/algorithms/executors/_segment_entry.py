"""The platform's entry point for a MONAI bundle inside the sandbox: images in, SEG out.

`python -m voxelhub.algorithms.executors._segment_entry` runs in the sandbox with the bundle
as its working directory (`/opt/algorithm`). It reads `/input/inputs.json`, loads every
DICOM series and image input, loads the bundle with `voxelhub.segment`, checks the inputs
against what the model says it takes (modality, number of series), segments, and writes
under `/output` by the container contract:

- `segmentation/seg.dcm`: the DICOM SEG, referencing the source series;
- `report/sr.dcm`: a TID 1500 SR with the volume of each segment;
- `volumes.json`: label, name, voxel count and mL of each segment;
- `mask.mha`: the label map on the first input's grid.

(SEG and SR only for DICOM inputs.) Everything is written to a scratch folder first and
moved into `/output` only when all of it is done, so a failed run leaves `/output` empty.
A problem with the inputs or the bundle ends the run with exit status 2 and one line on
stderr that says what is wrong; that line becomes the job's message.

With `--serve` it loads the model once and then segments request after request (see
`serve`): the long-lived sandboxed process behind warm bundles (`algorithms.warm`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEGMENTATION, REPORT, VOLUMES, MASK = "segmentation", "report", "volumes", "mask"
INPUT_KINDS = ("dicom_series", "image")
USAGE_ERROR = 2


class EntryError(Exception):
    """An input or bundle problem, said for the person who started the job."""


def input_paths(input_dir: Path) -> list[Path]:
    """The folders and files of the DICOM series and image inputs, in manifest order."""
    manifest_path = input_dir / "inputs.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EntryError(f"cannot read {manifest_path}: {err}") from err
    paths = []
    for entry in manifest.get("inputs", []):
        if entry.get("kind") not in INPUT_KINDS or not entry.get("path"):
            continue
        path = input_dir / entry["path"]
        if entry["kind"] == "dicom_series" and not any(path.glob("*")):
            raise EntryError(
                f"input {entry['interface']!r}: the series has no instances in the store; "
                "send the series again or pick another"
            )
        paths.append(path)
    if not paths:
        raise EntryError(
            "the job has no DICOM series or image input; a segmentation bundle takes at "
            "least one (declare an input of kind dicom_series or image)"
        )
    return paths


def load(bundle: Path, *, device: str | None = None) -> Any:
    """The bundle's model, loaded once; EntryError when it cannot be."""
    from voxelhub.segment import SegmentError, load_model

    try:
        return load_model(bundle, runtime="eager", device=device)
    except SegmentError as err:
        raise EntryError(str(err).replace(str(bundle), "the bundle")) from err


def segment(
    bundle: Path,
    input_dir: Path,
    output_dir: Path,
    *,
    device: str | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Segment the job's inputs with the bundle (or its loaded `model`); timings by phase."""
    from voxelhub.segment import SegmentError
    from voxelhub.segment.inputs import assign_roles, read_inputs
    from voxelhub.segment.outputs import write_outputs

    timings: dict[str, Any] = {}
    started = time.perf_counter()
    paths = input_paths(input_dir)
    try:
        inputs = read_inputs([str(p) for p in paths])
        timings["read_s"] = time.perf_counter() - started
        if model is None:
            model = load(bundle, device=device)
            timings["load_s"] = time.perf_counter() - started - timings["read_s"]
        ordered = assign_roles(inputs, model.metadata)
        mark = time.perf_counter()
        labels = model.predict([item.image for item in ordered])
        timings["inference_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="segment-") as scratch:
            written = write_outputs(Path(scratch), labels, model.metadata, ordered, runtime="eager")
            timings["write_s"] = time.perf_counter() - mark
            _publish(written, output_dir)
    except SegmentError as err:
        raise EntryError(str(err).replace(str(bundle), "the bundle")) from err
    return timings


def serve(bundle: Path, input_root: Path, output_root: Path, *, device: str | None) -> int:
    """Keep the model loaded and segment one request per stdin line, answering on stdout.

    A request is `{"request": NAME}`: inputs in `input_root/NAME`, outputs to
    `output_root/NAME`. The answers are one JSON line each: `{"ready": ...}` once loaded
    (or `{"error": ...}` and exit 2), then `{"ok": true, "timings": ...}` or
    `{"ok": false, "error": ...}` per request.
    """
    try:
        model = load(bundle, device=device)
    except EntryError as err:
        _answer({"error": str(err)})
        return USAGE_ERROR
    _answer({"ready": True, "name": model.metadata.name})
    for line in sys.stdin:
        try:
            name = Path(str(json.loads(line)["request"])).name
            out = output_root / name
            out.mkdir(parents=True, exist_ok=True)
            timings = segment(bundle, input_root / name, out, device=device, model=model)
        except EntryError as err:
            _answer({"ok": False, "error": str(err)})
            continue
        except (ValueError, KeyError) as err:
            _answer({"ok": False, "error": f"not a request: {err}"})
            continue
        _answer({"ok": True, "timings": {k: round(v, 3) for k, v in timings.items()}})
    return 0


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _publish(written: Any, output_dir: Path) -> None:
    """Move the finished files into the contract's layout under /output."""
    moves = [
        (written.mask, output_dir / f"{MASK}.mha"),
        (written.volumes, output_dir / f"{VOLUMES}.json"),
    ]
    if written.seg is not None:
        moves.append((written.seg, output_dir / SEGMENTATION / "seg.dcm"))
    if written.sr is not None:
        moves.append((written.sr, output_dir / REPORT / "sr.dcm"))
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    serving = "--serve" in args
    args = [a for a in args if a != "--serve"]
    bundle = Path(args[0]) if args else Path.cwd()
    input_dir = Path(os.environ.get("VOXELHUB_INPUT", "/input"))
    output_dir = Path(os.environ.get("VOXELHUB_OUTPUT", "/output"))
    device = "cuda" if _has_cuda() else None
    if serving:
        return serve(bundle, input_dir, output_dir, device=device)
    try:
        timings = segment(bundle, input_dir, output_dir, device=device)
    except EntryError as err:
        sys.stderr.write(f"{err}\n")
        return USAGE_ERROR
    print(json.dumps({"timings": {k: round(v, 3) for k, v in timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
