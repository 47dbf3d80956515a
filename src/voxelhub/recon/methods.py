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
import types
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from time import perf_counter
from typing import Any, Union, get_args, get_origin, get_type_hints

from voxelhub.recon.detect import MIN_ACS_LINES
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
# Methods that work without a calibration (ACS) block; every other one is refused data
# without one, since a method that calibrates on nothing fails in obscure ways.
_WITHOUT_CALIBRATION: set[str] = {"zero-filled"}
_LOADED: set[str] = set()
_UNAVAILABLE: dict[str, str] = {}  # method → the package it needs that is not installed


def register_method(
    name: str, method: ReconMethod, *, replace_existing: bool = False, calibrates: bool = True
) -> None:
    """Make `method` available as `reconstruct(kspace, method=name)` and on the CLI;
    `calibrates` False lets it run on k-space without a calibration (ACS) block."""
    if not name or name != name.strip().lower():
        raise ValueError(f"a method name is lower-case without spaces at the ends, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not method and not replace_existing:
        raise ValueError(f"a reconstruction method {name!r} is already registered")
    _REGISTRY[name] = method
    if calibrates:
        _WITHOUT_CALIBRATION.discard(name)
    else:
        _WITHOUT_CALIBRATION.add(name)


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


def needs_calibration(name: str) -> bool:
    """Whether method `name` calibrates on the ACS block (so refuses k-space without one).

    >>> needs_calibration("grappa"), needs_calibration("zero-filled")
    (True, False)
    """
    get_method(name)
    return name not in _WITHOUT_CALIBRATION


def _check_calibration(kspace: KSpace, method: str) -> None:
    lines = kspace.sampling.acs_lines
    if lines < MIN_ACS_LINES and needs_calibration(method):
        raise ReconError(
            f"{kspace.source or 'k-space'}: no ACS block ({lines} calibration lines, at least "
            f"{MIN_ACS_LINES} needed); {method} calibrates on a fully sampled region at the "
            "k-space centre: use --method zero-filled, or data acquired with calibration lines"
        )


def accepted_settings(name: str) -> tuple[str, ...]:
    """The keyword settings method `name` takes."""
    parameters = inspect.signature(get_method(name)).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# annotation → whether a setting's value fits it (ints do for floats)
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    type(None): lambda value: value is None,
    float: _is_number,
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    str: lambda value: isinstance(value, str),
    bool: lambda value: isinstance(value, bool),
}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a setting's value fits its annotation (lists do for tuples); annotations this
    does not know accept anything."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, option) for option in get_args(annotation))
    if origin is tuple:
        items = get_args(annotation)
        if not isinstance(value, list | tuple):
            return False
        if not items or Ellipsis in items:
            return True
        return len(value) == len(items) and all(
            _matches(v, a) for v, a in zip(value, items, strict=True)
        )
    check = _SCALARS.get(annotation)
    return check is None or check(value)


def _check_type(method: str, function: ReconMethod, name: str, value: Any) -> None:
    """Refuse a setting of the wrong type (a command-line value parsed as a string, a list
    where a number belongs) before the method trips over it."""
    try:
        hints = get_type_hints(function)
    except (NameError, TypeError):  # annotations that cannot be resolved: nothing to check
        return
    if name in hints and not _matches(value, hints[name]):
        wanted = getattr(hints[name], "__name__", None) if not get_args(hints[name]) else None
        wanted = wanted or str(hints[name]).replace("typing.", "")
        raise ReconError(
            f"{method}: the setting {name} must be {wanted}, got {value!r}; "
            f"e.g. --set {name}=... with a value of that type"
        )


def reconstruct(kspace: KSpace, method: str = "grappa", **settings: Any) -> Reconstruction:
    """Reconstruct `kspace` with the named method; unknown settings are a ReconError.

    Where the k-space carries a separate reference scan, the settings record it
    (`separate_reference`, and the `reference_lines` calibrated on).

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
    for name, value in settings.items():
        _check_type(method, function, name, value)
    _check_calibration(kspace, method)
    start = perf_counter()
    result = function(kspace, **settings)
    if result.seconds_per_slice <= 0:
        elapsed = (perf_counter() - start) / max(kspace.slices, 1)
        result = replace(result, seconds_per_slice=elapsed)
    if kspace.calibration is not None:
        recorded = {"separate_reference": True, "reference_lines": kspace.sampling.acs_lines}
        result = replace(result, settings={**result.settings, **recorded})
    return result
