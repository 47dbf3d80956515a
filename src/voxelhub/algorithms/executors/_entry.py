"""Which command runs a user package, when the request gives none.

The rule, first match wins, inside the sandbox where the package is `/opt/algorithm`:

1. `request.command`, as given.
2. A MONAI bundle (the package has `configs/` and `models/`) whose job has a DICOM series
   or image input: the platform's segmentation entry point,
   `python -m voxelhub.algorithms.executors._segment_entry /opt/algorithm`, which segments
   the inputs with `voxelhub.segment` and writes the mask, DICOM SEG, SR and volumes JSON.
   Any other MONAI bundle: `python -m monai.bundle run --bundle_root /opt/algorithm
   --config_file configs/inference.json [--meta_file configs/metadata.json]
   [--logging_file configs/logging.conf] --dataset_dir /input --output_dir /output`
   (`inference.yaml` also does); needs MONAI in the platform's Python environment.
3. `main.py` at the top: `python /opt/algorithm/main.py`.
4. `__main__.py` at the top: `python /opt/algorithm`.
5. Exactly one directory with a `__main__.py` (a package `name/`): `python -m name`.

`python` is the interpreter the platform runs with, so the package imports what the platform
has installed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from voxelhub.algorithms.contract import (
    CONTAINER_INPUT,
    CONTAINER_OUTPUT,
    INPUTS_JSON,
    ExecutionRequest,
)
from voxelhub.algorithms.executors._bwrap import PACKAGE_MOUNT
from voxelhub.algorithms.executors.errors import PackageError

_BUNDLE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
SEGMENT_ENTRY = "voxelhub.algorithms.executors._segment_entry"
_IMAGE_KINDS = ("dicom_series", "image")


def entry_command(request: ExecutionRequest) -> list[str]:
    """The command that runs the request's package, by the rule above."""
    if request.command:
        return list(request.command)
    package = request.package_dir
    if package is None or not package.is_dir():
        raise PackageError(f"the package directory {package} does not exist")
    if (package / "configs").is_dir() and (package / "models").is_dir():
        if takes_images(request):
            return [sys.executable, "-m", SEGMENT_ENTRY, PACKAGE_MOUNT]
        return bundle_command(package)
    if (package / "main.py").is_file():
        return [sys.executable, f"{PACKAGE_MOUNT}/main.py"]
    if (package / "__main__.py").is_file():
        return [sys.executable, PACKAGE_MOUNT]
    modules = sorted(d.name for d in package.iterdir() if (d / "__main__.py").is_file())
    if len(modules) == 1:
        return [sys.executable, "-m", modules[0]]
    found = f" (found several: {', '.join(modules)})" if modules else ""
    raise PackageError(
        "the package has no entry point: add main.py, or __main__.py, or one package directory "
        f"with a __main__.py{found}, or give the command to run"
    )


def takes_images(request: ExecutionRequest) -> bool:
    """Whether the job's inputs.json lists a DICOM series or an image."""
    try:
        manifest = json.loads((request.input_dir / INPUTS_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(entry.get("kind") in _IMAGE_KINDS for entry in manifest.get("inputs", []))


def bundle_command(bundle: Path) -> list[str]:
    """`python -m monai.bundle run …` for a MONAI bundle mounted at /opt/algorithm."""
    if importlib.util.find_spec("monai") is None:
        raise PackageError(
            "the package is a MONAI bundle (it has configs/ and models/), and running one needs "
            "the monai package, which is not installed in the platform's Python environment: "
            "install monai, or give the command to run"
        )
    configs = bundle / "configs"
    config = next((configs / name for name in _BUNDLE_CONFIGS if (configs / name).is_file()), None)
    if config is None:
        raise PackageError(
            f"the MONAI bundle has no configs/inference.json (nor .yaml): add one, or give the "
            f"command to run; configs/ holds {sorted(p.name for p in configs.iterdir())}"
        )
    mount = f"{PACKAGE_MOUNT}/configs"
    argv = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", PACKAGE_MOUNT]
    argv += ["--config_file", f"{mount}/{config.name}"]
    if (configs / "metadata.json").is_file():
        argv += ["--meta_file", f"{mount}/metadata.json"]
    if (configs / "logging.conf").is_file():
        argv += ["--logging_file", f"{mount}/logging.conf"]
    return [*argv, "--dataset_dir", CONTAINER_INPUT, "--output_dir", CONTAINER_OUTPUT]
