"""The platform's own algorithms, each built from pipeline operators.

`BUILTINS` describes them for the registry (slug → spec); `register_all()` makes them
runnable by the built-in executor. Pure compute: nothing here imports web, database or
queue code.
"""

from __future__ import annotations

import importlib

from voxelhub.algorithms.builtins import (
    echo,
    mri_preprocess,
    mri_reconstruction,
    series_statistics,
    threshold_segmentation,
)
from voxelhub.algorithms.builtins.manifest import InputError
from voxelhub.algorithms.builtins.spec import BuiltinFn, BuiltinSpec, InterfaceSpec, Resources

_MODULES = (threshold_segmentation, series_statistics, echo)

BUILTINS: dict[str, BuiltinSpec] = {module.SPEC.slug: module.SPEC for module in _MODULES}
RUNNERS: dict[str, BuiltinFn] = {module.SPEC.slug: module.run for module in _MODULES}
for _recon in (mri_preprocess, mri_reconstruction):
    BUILTINS.update(_recon.SPECS)
    RUNNERS.update(_recon.RUNNERS)


def register_all() -> None:
    """Register every built-in with the built-in executor under its slug."""
    # Imported here so that describing the built-ins needs no executor code.
    executor = importlib.import_module("voxelhub.algorithms.executors.builtin")
    for slug, fn in RUNNERS.items():
        executor.register_builtin(slug, fn)


__all__ = [
    "BUILTINS",
    "RUNNERS",
    "BuiltinFn",
    "BuiltinSpec",
    "InputError",
    "InterfaceSpec",
    "Resources",
    "register_all",
]
