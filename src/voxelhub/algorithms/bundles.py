"""MONAI bundles uploaded as algorithm packages: checked before they are stored.

A bundle's configs may execute code, so nothing here instantiates them: the check reads
the metadata (`voxelhub.segment.bundle.bundle_metadata`, which only reads JSON), parses the
inference config as data, makes sure the keys the platform runs exist, and loads
`models/model.pt` with `weights_only=True` (tensors only, no code). Whether the network
builds and the weights fit it is found out in the sandbox, at the start of the job.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from voxelhub.algorithms.errors import InvalidAlgorithm

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
REQUIRED_KEYS = ("preprocessing", "inferer", "postprocessing")
NETWORK_KEYS = ("network_def", "network")
MAX_BUNDLE_BYTES = 4 * 1024**3


def _members(archive: Path) -> list[str]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            return zipped.namelist()
    with tarfile.open(archive) as tarred:
        return tarred.getnames()


def _parts(name: str) -> tuple[str, ...]:
    parts = PurePosixPath(name).parts
    return parts[1:] if parts and parts[0] == "." else parts


def bundle_prefix(names: list[str]) -> str | None:
    """The folder inside the archive that is a MONAI bundle ("" for the top), or None.

    >>> bundle_prefix(["spleen/configs/metadata.json", "spleen/models/model.pt"])
    'spleen'
    """
    for name in names:
        parts = _parts(name)
        if len(parts) in (2, 3) and parts[-2:] == ("configs", "metadata.json"):
            return "/".join(parts[:-2])
    return None


def check_bundle_archive(archive: Path) -> dict[str, Any] | None:
    """The bundle's metadata when the package archive is a MONAI bundle, else None.

    Raises InvalidAlgorithm, naming the file and what to fix, when it is a broken bundle.
    """
    names = _members(archive)
    prefix = bundle_prefix(names)
    if prefix is None:
        return None
    with tempfile.TemporaryDirectory(prefix="vxh-bundle-check-") as scratch:
        root = Path(scratch)
        wanted = [n for n in names if _under(n, prefix, ("configs", "models"))]
        _extract(archive, wanted, root)
        return check_bundle(root / prefix if prefix else root)


def _under(name: str, prefix: str, folders: tuple[str, ...]) -> bool:
    parts = _parts(name)
    depth = len(PurePosixPath(prefix).parts) if prefix else 0
    return len(parts) > depth + 1 and parts[depth] in folders


def _extract(archive: Path, names: list[str], root: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for name in names:
                if name.startswith("/") or ".." in PurePosixPath(name).parts:
                    raise InvalidAlgorithm(f"the package holds an unsafe path {name!r}")
                zipped.extract(name, root)
        return
    with tarfile.open(archive) as tarred:
        members = [tarred.getmember(n) for n in names]
        tarred.extractall(root, members=members, filter="data")


def check_bundle(root: Path) -> dict[str, Any]:
    """Check an unpacked bundle folder without running any of it; returns its metadata."""
    from voxelhub.segment import SegmentError
    from voxelhub.segment.bundle import bundle_metadata, read_metadata

    try:
        document = read_metadata(root)
        metadata, _, _ = bundle_metadata(root, document)
    except SegmentError as err:
        raise InvalidAlgorithm(_relative(f"the MONAI bundle is not usable: {err}", root)) from err
    config = _read_config(root)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if not any(key in config for key in NETWORK_KEYS):
        missing.append("network_def")
    if missing:
        raise InvalidAlgorithm(
            f"the MONAI bundle's configs/{_config_path(root).name} lacks {', '.join(missing)}; "
            "an inference config defines network_def, preprocessing, inferer and "
            "postprocessing (as in the MONAI model zoo)"
        )
    _check_weights(root)
    return {"name": metadata.name, "version": metadata.version, "labels": metadata.label_names}


def _relative(message: str, root: Path) -> str:
    return message.replace(f"{root}/", "").replace(str(root), "the bundle")


def _config_path(root: Path) -> Path:
    for name in CONFIG_NAMES:
        if (root / "configs" / name).is_file():
            return root / "configs" / name
    raise InvalidAlgorithm(
        "the MONAI bundle has no configs/inference.json (nor .yaml); add the inference config"
    )


def _read_config(root: Path) -> dict[str, Any]:
    path = _config_path(root)
    try:
        if path.suffix == ".json":
            config = json.loads(path.read_text())
        else:
            import yaml  # type: ignore[import-untyped]

            config = yaml.safe_load(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidAlgorithm(
            f"the MONAI bundle's configs/{path.name} is not valid JSON: line {err.lineno}, "
            f"column {err.colno}: {err.msg}"
        ) from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InvalidAlgorithm(
            f"the MONAI bundle's configs/{path.name} cannot be read: {err}"
        ) from err
    if not isinstance(config, dict):
        raise InvalidAlgorithm(f"the MONAI bundle's configs/{path.name} must be a mapping")
    return config


def _check_weights(root: Path) -> None:
    import torch

    state_path, script_path = root / "models" / "model.pt", root / "models" / "model.ts"
    if state_path.is_file():
        try:
            torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidAlgorithm(
                f"the MONAI bundle's models/model.pt is not a PyTorch state dict: {first}; "
                "save it with torch.save(network.state_dict(), 'models/model.pt')"
            ) from err
    elif script_path.is_file():
        if not zipfile.is_zipfile(script_path):
            raise InvalidAlgorithm(
                "the MONAI bundle's models/model.ts is not a TorchScript file; save it with "
                "torch.jit.save"
            )
    else:
        raise InvalidAlgorithm(
            "the MONAI bundle has no models/model.pt (weights) nor models/model.ts (TorchScript)"
        )
