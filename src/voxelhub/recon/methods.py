"""The registry of reconstruction methods and `reconstruct`, which dispatches to them.

Built in: "zero-filled" and "grappa". Other methods join with `register_method(name, fn)`,
called when their module is imported: the modules in `PLUGIN_MODULES` (RAKI and residual
RAKI) are imported on first lookup if they exist, and third-party packages can name a method
in the `voxelhub.recon_methods` entry-point group (name → callable).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from time import perf_counter
from typing import Any

from voxelhub.recon.errors import ReconError
from voxelhub.recon.grappa import grappa
from voxelhub.recon.model import KSpace, Reconstruction
from voxelhub.recon.zerofilled import zero_filled

logger = logging.getLogger(__name__)

PLUGIN_MODULES = ("voxelhub.recon.raki", "voxelhub.recon.rraki")
# The methods each plugin module registers, to name them when the module cannot load.
_PLUGIN_METHODS = {"voxelhub.recon.raki": "raki", "voxelhub.recon.rraki": "rraki"}
ENTRY_POINT_GROUP = "voxelhub.recon_methods"


# A reconstruction takes the k-space positionally and its settings as keyword-only
# arguments with defaults, and returns a Reconstruction.
ReconMethod = Callable[..., Reconstruction]

_REGISTRY: dict[str, ReconMethod] = {"zero-filled": zero_filled, "grappa": grappa}
_LOADED: set[str] = set()
_UNAVAILABLE: dict[str, str] = {}  # method → the package it needs that is not installed


def register_method(name: str, method: ReconMethod, *, replace_existing: bool = False) -> None:
    """Make `method` available as `reconstruct(kspace, method=name)` and on the CLI."""
    if not name or name != name.strip().lower():
        raise ValueError(f"a method name is lower-case without spaces at the ends, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not method and not replace_existing:
        raise ValueError(f"a reconstruction method {name!r} is already registered")
    _REGISTRY[name] = method


def _load_plugins() -> None:
    if _LOADED:
        return
    _LOADED.add("plugins")
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                logger.debug("reconstruction plugin %s is not installed", module)
            elif err.name and module in _PLUGIN_METHODS:
                # RAKI needs torch (the `ai` extra); the other methods work without it.
                _UNAVAILABLE[_PLUGIN_METHODS[module]] = err.name
            else:
                raise
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in _REGISTRY:
            register_method(point.name, point.load())


def available_methods() -> tuple[str, ...]:
    """Names of every registered method, built-ins first."""
    _load_plugins()
    return tuple(_REGISTRY)


def get_method(name: str) -> ReconMethod:
    """The method registered as `name`; ReconError naming the ones there are otherwise."""
    _load_plugins()
    if name not in _REGISTRY and name in _UNAVAILABLE:
        raise ReconError(
            f"the reconstruction method {name!r} needs {_UNAVAILABLE[name]}, which is not "
            "installed: install the deep-learning extra with pip install 'voxelhub[ai]'"
        )
    if name not in _REGISTRY:
        raise ReconError(
            f"unknown reconstruction method {name!r}; available: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]


def accepted_settings(name: str) -> tuple[str, ...]:
    """The keyword settings method `name` takes."""
    parameters = inspect.signature(get_method(name)).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def reconstruct(kspace: KSpace, method: str = "grappa", **settings: Any) -> Reconstruction:
    """Reconstruct `kspace` with the named method; unknown settings are a ReconError.

    >>> from voxelhub.recon.phantom import PhantomSpec, simulate
    >>> acq = simulate(PhantomSpec(readout=64, phase_encode=48, coils=4, acceleration=2,
    ...                            acs_lines=16))
    >>> reconstruct(acq.kspace, "grappa", kernel=(3, 2)).settings["kernel"]
    [3, 2]
    """
    function = get_method(method)
    try:
        inspect.signature(function).bind(kspace, **settings)
    except TypeError as err:
        allowed = ", ".join(accepted_settings(method)) or "none"
        raise ReconError(
            f"{method} does not take {sorted(settings)} (settings: {allowed})"
        ) from err
    start = perf_counter()
    result = function(kspace, **settings)
    if result.seconds_per_slice <= 0:
        elapsed = (perf_counter() - start) / max(kspace.slices, 1)
        result = replace(result, seconds_per_slice=elapsed)
    return result
