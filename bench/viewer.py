"""Benchmark of the viewer's server-side rendering against the store's WADO-RS /rendered.

Run by hand, never from the tests:

    .venv/bin/python bench/viewer.py --quick     # 100 slices, about 2 minutes
    .venv/bin/python bench/viewer.py             # 500 slices of 512x512 (a 250 MB CT)

It writes a synthetic CT (`ct_phantom`) as Part-10 files, starts `voxelhub serve` on a free
local port with a fresh home, STOWs the series, and then measures over HTTP, request to
last byte, one request at a time on a keep-alive connection:

- opening the study: the time to the first axial image (study document, load request,
  then the middle slice) and until the whole volume is decoded in the cache;
- latency (p50, p99) of a 512x512 axial slice with window/level, of coronal and sagittal
  reformations, and of a 30 mm MIP slab, from the cached volume;
- the volume cache's memory against its budget, and the server's resident memory.

The peer, measured in the same run on the same server: WADO-RS `/rendered` of the same
instance with the same window (decoded per request, no cache), and the time to fetch every
slice through it (what a viewer without a server-side volume does before free scrolling).
The store cannot reformat or project, so those rows have no peer. Figures are printed and
written to bench/results/viewer-<date>[-quick].json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import MB, Data, Sizes  # noqa: E402
from _dicomweb import stow_concurrently  # noqa: E402
from _servers import ORTHANC_BINARY, CpuMeter, Orthanc, Voxelhub, tree_rss  # noqa: E402

WINDOW = {"wc": 40, "ww": 400}
PEER_CLIENTS = 4
# PS3.18 8.3.5.1.4: center, width, function; commas as they are (Orthanc does not read %2C).
PEER_WINDOW = "40,400,linear"
READY_TIMEOUT_S = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 slices, fewer requests")
    parser.add_argument("--workdir", type=Path, default=None, help="data and server home")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--no-orthanc", action="store_true", help="leave out Orthanc's /rendered (needs root)"
    )
    parser.add_argument("--in-netns", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "mean_ms": 1000 * sum(ordered) / len(ordered),
        "n": len(ordered),
    }


def timed_gets(
    http: httpx.Client, requests: list[tuple[str, dict[str, Any]]], *, roots: list[int]
) -> dict[str, Any]:
    """Latency of each request, and the server's CPU time per request (which, unlike the
    latency, hardly changes when other programs compete for the CPU)."""
    seconds, sizes = [], []
    with CpuMeter(roots) as cpu:
        for url, params in requests:
            started = time.perf_counter()
            response = http.get(url, params=params)
            body = response.content
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(
                    f"GET {url} {params}: {response.status_code} {response.text[:300]}"
                )
            sizes.append(len(body))
    return {
        **percentiles(seconds),
        "mean_bytes": sum(sizes) / len(sizes),
        "server_cpu_ms_per_request": 1000 * cpu.seconds / len(requests),
    }


def open_study(
    server: Voxelhub, http: httpx.Client, study: str, series: str, slices: int
) -> dict[str, Any]:
    """What a reader waits for: the first image, then the whole series for free scrolling."""
    api = f"{server.base}/viewer/api"
    started = time.perf_counter()
    document = http.get(f"{api}/studies/{study}")
    document.raise_for_status()
    document_s = time.perf_counter() - started
    loading = http.post(f"{api}/series/{series}/load")
    loading.raise_for_status()
    load_request_s = time.perf_counter() - started - document_s
    first = http.get(f"{api}/series/{series}/render", params={"index": slices // 2, **WINDOW})
    first.raise_for_status()
    first_image_s = time.perf_counter() - started
    while True:
        status = http.get(f"{api}/series/{series}/status").json()
        if status["state"] == "ready":
            break
        if status["state"] == "error" or time.perf_counter() - started > READY_TIMEOUT_S:
            raise RuntimeError(f"the series did not load: {status}")
        time.sleep(0.01)
    ready_s = time.perf_counter() - started
    return {
        "study_document_s": document_s,
        "load_request_s": load_request_s,
        "first_image_s": first_image_s,
        "ready_for_scrolling_s": ready_s,
        "study_document_valid_volume": document.json()["series"][0]["volume"]["valid"],
    }


def peer_scroll_ready(
    server: Voxelhub | Orthanc, study: str, series: str, sops: list[str]
) -> float:
    """Seconds to fetch every slice through /rendered with a few parallel clients."""
    base = f"{server.dicomweb}/studies/{study}/series/{series}/instances"

    def fetch(chunk: list[str]) -> None:
        with httpx.Client(headers=server.headers, timeout=120) as http:
            for sop in chunk:
                response = http.get(f"{base}/{sop}/rendered?window={PEER_WINDOW}")
                response.raise_for_status()

    chunks = [sops[i::PEER_CLIENTS] for i in range(PEER_CLIENTS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(PEER_CLIENTS) as pool:
        list(pool.map(fetch, chunks))
    return time.perf_counter() - started


def measure(server: Voxelhub, sizes: Sizes, series_files: Any, quick: bool) -> dict[str, Any]:
    study, series = series_files.study_instance_uid, series_files.series_instance_uid
    slices = sizes.slices
    repeats = 60 if quick else 200
    figures: dict[str, Any] = {}
    gets = functools.partial(timed_gets, roots=server.root_pids())
    with httpx.Client(headers=server.headers, timeout=120) as http:
        figures["open_study"] = open_study(server, http, study, series, slices)
        print(f"  open study: {figures['open_study']}", flush=True)
        render = f"{server.base}/viewer/api/series/{series}/render"
        step = max(1, slices // repeats)
        axial = [
            (render, {"plane": "axial", "index": (i * step) % slices, **WINDOW})
            for i in range(repeats)
        ]
        figures["axial_png"] = gets(http, axial)
        figures["axial_jpeg"] = gets(http, [(u, {**p, "format": "jpeg"}) for u, p in axial])
        for plane in ("coronal", "sagittal"):
            figures[plane] = gets(
                http,
                [
                    (render, {"plane": plane, "index": 128 + (i * 3) % 256, **WINDOW})
                    for i in range(repeats // 2)
                ],
            )
        figures["axial_mip_30mm"] = gets(
            http,
            [
                (render, {"index": (i * step) % slices, "mode": "mip", "slab": 30, **WINDOW})
                for i in range(repeats // 2)
            ],
        )
        figures["coronal_mip_30mm"] = gets(
            http,
            [
                (
                    render,
                    {
                        "plane": "coronal",
                        "index": 128 + (i * 3) % 256,
                        "mode": "mip",
                        "slab": 30,
                        **WINDOW,
                    },
                )
                for i in range(repeats // 4)
            ],
        )
        figures["sagittal_mip_30mm"] = gets(
            http,
            [
                (
                    render,
                    {
                        "plane": "sagittal",
                        "index": 128 + (i * 3) % 256,
                        "mode": "mip",
                        "slab": 30,
                        **WINDOW,
                    },
                )
                for i in range(repeats // 4)
            ],
        )
        cache = http.get(f"{server.base}/viewer/api/cache").json()
        figures["cache"] = {
            **cache,
            "used_mb": cache["used_bytes"] / MB,
            "budget_mb": cache["budget_bytes"] / MB,
        }
        rss, processes = tree_rss(server.root_pids())
        figures["server_rss_mb"] = rss / MB
        figures["server_processes"] = processes

        instances = http.get(
            f"{server.dicomweb}/studies/{study}/series/{series}/instances",
            params={"includefield": "00200013"},
        ).json()
        by_number = sorted(instances, key=lambda d: int(d["00200013"]["Value"][0]))
        sops = [d["00080018"]["Value"][0] for d in by_number]
        base = f"{server.dicomweb}/studies/{study}/series/{series}/instances"
        figures["peer_axial_rendered"] = gets(
            http,
            [
                (f"{base}/{sops[(i * step) % slices]}/rendered?window={PEER_WINDOW}", {})
                for i in range(repeats)
            ],
        )
    figures["peer_scroll_ready_s"] = peer_scroll_ready(server, study, series, sops)
    figures["sop_instance_uids"] = sops
    return figures


def measure_orthanc(
    orthanc: Orthanc, sizes: Sizes, series_files: Any, sops: list[str], quick: bool
) -> dict[str, Any]:
    """Orthanc's DICOMweb /rendered of the same instances, with the same window."""
    study, series = series_files.study_instance_uid, series_files.series_instance_uid
    repeats = 60 if quick else 200
    step = max(1, sizes.slices // repeats)
    base = f"{orthanc.dicomweb}/studies/{study}/series/{series}/instances"
    gets = functools.partial(timed_gets, roots=orthanc.root_pids())
    with httpx.Client(timeout=120) as http:
        axial = gets(
            http,
            [
                (f"{base}/{sops[(i * step) % sizes.slices]}/rendered?window={PEER_WINDOW}", {})
                for i in range(repeats)
            ],
        )
    return {
        "axial_rendered": axial,
        "scroll_ready_s": peer_scroll_ready(orthanc, study, series, sops),
    }


def orthanc_figures(
    orthanc: Orthanc, sizes: Sizes, series_files: Any, sops: list[str], quick: bool
) -> dict[str, Any]:
    print("starting Orthanc…", flush=True)
    orthanc.start()
    sent, _ = stow_concurrently(
        orthanc.stow_url,
        {},
        [series_files.paths],
        batch=sizes.batch,
        time_limit_s=sizes.stow_time_limit_s,
    )
    if sent.stored != sizes.slices:
        raise RuntimeError(f"Orthanc stored {sent.stored} of {sizes.slices}: {sent.errors}")
    return {
        "version": orthanc.version(),
        **measure_orthanc(orthanc, sizes, series_files, sops, quick),
    }


def cpu_of(figures: dict[str, Any]) -> str:
    return f" (cpu {figures['server_cpu_ms_per_request']:.1f})"


def table(figures: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    opened = figures["open_study"]
    peer = figures["peer_axial_rendered"]
    rows = [
        ("figure (cpu: server CPU ms per request)", "viewer", "peer (/rendered)", "ratio", "goal")
    ]
    orthanc = figures.get("orthanc")

    def latency(name: str, key: str, goal: str, with_peer: bool) -> None:
        value = figures[key]
        peer_text = "n/a"
        if with_peer:
            peer_text = f"{peer['p50_ms']:.1f} / {peer['p99_ms']:.1f}{cpu_of(peer)}"
        ratio = f"{value['p50_ms'] / peer['p50_ms']:.2f}" if with_peer else ""
        ours = f"{value['p50_ms']:.1f} / {value['p99_ms']:.1f}{cpu_of(value)}"
        rows.append((name, ours, peer_text, ratio, goal))

    latency("axial 512² PNG p50/p99 ms", "axial_png", "p50 < 20", True)
    latency("axial 512² JPEG p50/p99 ms", "axial_jpeg", "", True)
    latency("coronal p50/p99 ms", "coronal", "p50 < 40", False)
    latency("sagittal p50/p99 ms", "sagittal", "p50 < 40", False)
    latency("axial MIP 30 mm p50/p99 ms", "axial_mip_30mm", "p50 < 100", False)
    latency("coronal MIP 30 mm p50/p99 ms", "coronal_mip_30mm", "p50 < 100", False)
    latency("sagittal MIP 30 mm p50/p99 ms", "sagittal_mip_30mm", "", False)
    if orthanc:
        theirs = orthanc["axial_rendered"]
        rows.append(
            (
                "Orthanc /rendered axial p50/p99 ms",
                f"{figures['axial_png']['p50_ms']:.1f} / {figures['axial_png']['p99_ms']:.1f}"
                f" (cpu {figures['axial_png']['server_cpu_ms_per_request']:.1f})",
                f"{theirs['p50_ms']:.1f} / {theirs['p99_ms']:.1f}"
                f" (cpu {theirs['server_cpu_ms_per_request']:.1f})",
                f"{figures['axial_png']['p50_ms'] / theirs['p50_ms']:.2f}",
                "",
            )
        )
    rows.append(("first image s", f"{opened['first_image_s']:.3f}", "", "", "< 1"))
    ready, peer_ready = opened["ready_for_scrolling_s"], figures["peer_scroll_ready_s"]
    rows.append(
        (
            "series ready to scroll s",
            f"{ready:.2f}",
            f"{peer_ready:.2f}",
            f"{ready / peer_ready:.2f}",
            "< 3 (anchor < 10)",
        )
    )
    if orthanc:
        rows.append(
            (
                "ready to scroll vs Orthanc s",
                f"{ready:.2f}",
                f"{orthanc['scroll_ready_s']:.2f}",
                f"{ready / orthanc['scroll_ready_s']:.2f}",
                "",
            )
        )
    cache = figures["cache"]
    rows.append(
        (
            "volume cache MB / budget",
            f"{cache['used_mb']:.0f} / {cache['budget_mb']:.0f}",
            "",
            "",
            "≤ budget",
        )
    )
    rows.append(("server RSS MB", f"{figures['server_rss_mb']:.0f}", "", "", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wants_orthanc = not args.no_orthanc and shutil.which(ORTHANC_BINARY) is not None
    if args.in_netns or not wants_orthanc:
        return run(args, with_orthanc=bool(args.in_netns))
    if os.geteuid() != 0:
        print(
            "Orthanc listens on every address, so it runs in a private network namespace, "
            "which needs root; run as root or add --no-orthanc",
            file=sys.stderr,
        )
        return 2
    import _netns

    name = _netns.namespace_name()
    _netns.create(name)
    try:
        command = [
            *_netns.prefix(name),
            sys.executable,
            str(Path(__file__).resolve()),
            *(argv if argv is not None else sys.argv[1:]),
            "--in-netns",
            name,
        ]
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        _netns.remove(name)


def run(args: argparse.Namespace, *, with_orthanc: bool) -> int:
    """Everything, in this network namespace (a private one when Orthanc takes part)."""
    if with_orthanc:
        import _netns

        _netns.check_isolated()
    sizes = Sizes.pick(quick=args.quick)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vxhviewer-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "slices": sizes.slices,
        "size": sizes.size,
        "quick": args.quick,
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    server = Voxelhub(work / "voxelhub", [], http_port=free_port(), dimse_port=free_port())
    orthanc = Orthanc(work / "orthanc", [], http_port=free_port(), dicom_port=free_port())
    started = time.monotonic()
    try:
        print(f"writing a {sizes.slices}-slice {sizes.size}² CT…", flush=True)
        series_files = Data(work / "data", sizes).series("viewer")
        results["series_mb"] = series_files.total_bytes / MB
        print("starting voxelhub serve…", flush=True)
        server.start(dimse=False)
        outcome, _ = stow_concurrently(
            server.stow_url,
            server.headers,
            [series_files.paths],
            batch=sizes.batch,
            time_limit_s=sizes.stow_time_limit_s,
        )
        if outcome.stored != sizes.slices:
            raise RuntimeError(f"STOW stored {outcome.stored} of {sizes.slices}: {outcome.errors}")
        print(f"stored {outcome.stored} instances; measuring…", flush=True)
        results["figures"] = figures = measure(server, sizes, series_files, args.quick)
        server.stop()
        sops = figures.pop("sop_instance_uids")
        if with_orthanc:
            try:
                figures["orthanc"] = orthanc_figures(orthanc, sizes, series_files, sops, args.quick)
            except (RuntimeError, OSError, httpx.HTTPError) as err:
                results["orthanc_error"] = f"{type(err).__name__}: {err}"[:2000]
                print(f"  Orthanc left out: {results['orthanc_error']}", flush=True)
    finally:
        server.stop()
        orthanc.stop()
        results["wall_seconds"] = time.monotonic() - started
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    rows = table(results["figures"])
    results["table"] = rows
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    name = f"viewer-{datetime.now().strftime('%Y-%m-%d')}{'-quick' if args.quick else ''}.json"
    path = HERE / "results" / name
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
