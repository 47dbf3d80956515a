"""The bubblewrap command line that confines a user package to the container contract.

Inside the sandbox the algorithm sees, read-only, the host's `/usr` (and the `/bin`, `/lib…`
links into it) and the Python installation the platform runs with, at the same paths, so it
can import numpy or torch from the platform's environment; its package at `/opt/algorithm`;
`/input` read-only, `/output` writable, `/opt/ml/model` read-only; a private `/tmp`, `/proc`
and `/dev`. Every namespace is new: no network (unless the limits allow it), no other
processes, no host users. It runs as uid 1000 without capabilities; files it writes to
`/output` belong to the worker's user on the host. What it writes to `/tmp` is memory: charged
to its cgroup where there is one, unbounded under RLIMIT_AS.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import voxelhub
from voxelhub.algorithms.contract import (
    CONTAINER_INPUT,
    CONTAINER_MODEL,
    CONTAINER_OUTPUT,
    ExecutionRequest,
)
from voxelhub.algorithms.executors.errors import PackageError

PACKAGE_MOUNT = "/opt/algorithm"
SANDBOX_UID = 1000

_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Library lookup (numpy wheels' openblas aside, Debian's BLAS goes through alternatives).
_SYSTEM_FILES = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
_NETWORK_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)


def bwrap_argv(
    request: ExecutionRequest,
    command: Sequence[str],
    *,
    bwrap: str = "bwrap",
    gpu_devices: Sequence[Path] = (),
) -> list[str]:
    """`bwrap … -- command` for one run of the package in `request.package_dir`."""
    package_dir = request.package_dir
    if package_dir is None:
        raise PackageError("the sandbox needs request.package_dir, the unpacked package")
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        *("--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)),
        "--die-with-parent",
        "--new-session",
        # The algorithm is PID 1 of its namespace and bubblewrap's own child, so that its peak
        # memory reaches the launcher (bubblewrap's init would keep it to itself). The cost:
        # orphans it does not reap stay zombies until it exits.
        "--as-pid-1",
        "--cap-drop",
        "ALL",
        "--clearenv",
        *_system_mounts(),
        # /tmp first: the Python installation (a venv may live under /tmp) mounts over it.
        *("--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"),
        *_pairs("--ro-bind", [(p, p) for p in python_roots()]),
        *_pairs(
            "--ro-bind",
            [
                (str(package_dir), PACKAGE_MOUNT),
                (str(request.input_dir), CONTAINER_INPUT),
                (str(request.model_dir), CONTAINER_MODEL),
            ],
        ),
        *_pairs("--bind", [(str(request.output_dir), CONTAINER_OUTPUT)]),
        *_pairs("--dev-bind", [(str(d), str(d)) for d in gpu_devices]),
        *_pairs("--setenv", list(sandbox_env(request).items())),
        "--chdir",
        PACKAGE_MOUNT,
    ]
    if request.limits.network:
        argv += ["--share-net", *_pairs("--ro-bind-try", [(f, f) for f in _NETWORK_FILES])]
    return [*argv, "--", *command]


def python_roots() -> list[str]:
    """The directories of the running Python installation (venv and base), outside /usr.

    With voxelhub installed from a source checkout (editable), its `src/` folder too, so
    that the platform's own entry points run inside.
    """
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    source = Path(voxelhub.__file__).resolve().parents[1]
    if not any(source.is_relative_to(r) for r in roots):
        roots.add(str(source))
    return sorted(r for r in roots if not Path(r).is_relative_to("/usr"))


def sandbox_env(request: ExecutionRequest) -> dict[str, str]:
    """The whole environment inside: nothing of the worker's leaks in."""
    threads = str(max(1, math.floor(request.limits.cpus)))
    env = {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": "algorithm",  # getpass.getuser() without an /etc/passwd entry
        "LOGNAME": "algorithm",
        "LANG": "C.UTF-8",
        "PYTHONPATH": PACKAGE_MOUNT,
        "PYTHONUNBUFFERED": "1",  # what it printed before a kill still reaches the log
        "PYTHONDONTWRITEBYTECODE": "1",
        # CPU time is not capped in the sandbox; size the thread pools to the limit instead.
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    return env | dict(request.env)


def _system_mounts() -> list[str]:
    argv = ["--ro-bind", "/usr", "/usr"]
    for link in _SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            argv += ["--symlink", str(path.readlink()), link]
        elif path.is_dir():
            argv += ["--ro-bind", link, link]
    return argv + _pairs("--ro-bind-try", [(f, f) for f in _SYSTEM_FILES])


def _pairs(option: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [arg for source, dest in pairs for arg in (option, source, dest)]
