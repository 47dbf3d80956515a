"""Benchmarks of voxelhub's image store against Orthanc from Debian, in the same run.

Run by hand as root (it makes a private network namespace), never from the tests:

    .venv/bin/python bench/store.py --quick        # about 3 minutes
    .venv/bin/python bench/store.py                # full sizes, about 20 minutes
    .venv/bin/python bench/store.py --only stow,qido

Prints each figure for both servers and the ratio voxelhub/Orthanc, and writes them to
bench/results/store-<date>[-quick].json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
SECTIONS = ("stow", "cstore", "qido", "retrieve", "memory")
# voxelhub as started by default, and with two HTTP processes (STOW-RS only; a viewer's
# decoded series are cached per process, so one process is the default).
TWO_WEB = "voxelhub-2web"
SERVERS = ("orthanc", "voxelhub", TWO_WEB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where data and server homes go (default: a new temp folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument(
        "--servers",
        default="orthanc,voxelhub",
        help=f"which servers to measure, of {', '.join(SERVERS)} ({TWO_WEB} only in STOW-RS)",
    )
    parser.add_argument("--in-netns", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; pick from {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.in_netns:
        return run_inside(args)
    return run_outside(argv if argv is not None else sys.argv[1:])


def run_outside(argv: list[str]) -> int:
    """Make the namespace, run this script inside it, and always remove the namespace."""
    import _netns

    if os.geteuid() != 0:
        print("bench/store.py needs root: it creates a network namespace", file=sys.stderr)
        return 2
    for tool in ("ip", "Orthanc", "storescu"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed; see bench/README.md", file=sys.stderr)
            return 2
    name = _netns.namespace_name()
    _netns.create(name)
    try:
        command = [
            *_netns.prefix(name),
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
            "--in-netns",
            name,
        ]
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        _netns.remove(name)


def run_inside(args: argparse.Namespace) -> int:
    import _netns
    from _common import Data, Sizes
    from _sections import idle_cpu, warm_up

    _netns.check_isolated()
    sizes = Sizes.pick(quick=args.quick)
    sections = [s for s in SECTIONS if s in args.only.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vxhbench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    results: dict[str, Any] = {"sizes": sizes.__dict__, "sections": {}, "errors": {}}
    started = time.monotonic()
    servers: list[Any] = []
    try:
        servers = start_servers(args, work, sections, results["errors"])
        results["setup"] = describe(servers, work)
        print(json.dumps(results["setup"], indent=1), flush=True)
        data = Data(work / "data", sizes)
        warm_up(servers, data)
        results["setup"]["idle_cpu_percent"] = idle_cpu(servers)
        keep: dict[str, Any] = {}
        for section in sections:
            print(f"\n== {section} ==", flush=True)
            load_before = os.getloadavg()[0]
            try:
                figures = run_section(section, servers, data, sizes, keep)
            except Exception as err:  # one broken section must not lose the others
                results["errors"][section] = f"{type(err).__name__}: {err}"[:2000]
                print(f"  section {section} failed: {results['errors'][section]}", flush=True)
                continue
            figures["load_average_1min"] = [load_before, os.getloadavg()[0]]
            results["sections"][section] = figures
    finally:
        for server in servers:
            server.stop()
        results["wall_seconds"] = time.monotonic() - started
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = table_rows(results["sections"])
    results["table"] = rows
    print_table(rows, results)
    path = write_results(results, quick=args.quick)
    print(f"\nfigures written to {path}")
    return 0


def start_servers(
    args: argparse.Namespace, work: Path, sections: list[str], errors: dict[str, str]
) -> list[Any]:
    """The servers that started; one that fails is left out and its error recorded, so
    the other is still measured."""
    import _netns
    from _servers import Orthanc, Voxelhub

    prefix = _netns.prefix(args.in_netns)
    wanted = args.servers.split(",")
    candidates: list[Any] = []
    if "orthanc" in wanted:
        candidates.append(Orthanc(work / "orthanc", prefix))
    if "voxelhub" in wanted:
        candidates.append(Voxelhub(work / "voxelhub", prefix))
    if TWO_WEB in wanted and "stow" in sections:
        candidates.append(
            Voxelhub(work / TWO_WEB, prefix, http_port=8001, dimse_port=11113, name=TWO_WEB,
                     serve_args=["--web-processes", "2", "--dimse-port", "0"])
        )  # fmt: skip
    started = []
    for server in candidates:
        print(f"starting {server.name}…", flush=True)
        try:
            if isinstance(server, Voxelhub):
                server.start(dimse="cstore" in sections and server.name != TWO_WEB)
            else:
                server.start()
        except (RuntimeError, OSError, httpx.HTTPError, StopIteration) as err:
            server.stop()
            errors[f"start {server.name}"] = f"{type(err).__name__}: {err}"[:4000]
            print(f"  {server.name} did not start: {err}", flush=True)
            continue
        started.append(server)
    return started


def run_section(
    section: str, servers: list[Any], data: Any, sizes: Any, keep: dict[str, Any]
) -> dict[str, Any]:
    import _read
    import _sections

    if section == "stow":
        return _sections.stow(servers, data, sizes, keep)
    servers = [server for server in servers if server.name != TWO_WEB]
    if section == "cstore":
        return _sections.cstore(servers, data, sizes)
    if section == "qido":
        return _read.qido(servers, data, sizes)
    if section == "retrieve":
        series = keep.get("retrieve_series")
        if series is None:  # the STOW section did not run: store a series for this one
            series = data.series("retrieve")
            for server in servers:
                _read.stow_concurrently(
                    server.stow_url,
                    server.headers,
                    [series.paths],
                    batch=sizes.batch,
                    time_limit_s=sizes.stow_time_limit_s,
                )
        return _read.retrieve(servers, sizes, series)
    return _sections.memory(servers, data, sizes)


def describe(servers: list[Any], work: Path) -> dict[str, Any]:
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3)} GiB",
        "kernel": platform.release(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "servers": {s.name: s.version() for s in servers},
        "voxelhub_dimse": next((s.dimse_enabled for s in servers if s.name == "voxelhub"), None),
        "workdir": str(work),
    }


# --- the table ----------------------------------------------------------------------------

# (label, unit, section, key for a server's figures, value field, higher is better)
ROWS = [
    ("STOW-RS ingest, 1 client", "inst/s", "stow", "1_clients/{}", "instances_per_s", True),
    (
        "  server CPU per instance, 1 client",
        "ms",
        "stow",
        "1_clients/{}",
        "server_cpu_ms_per_instance",
        False,
    ),
    ("STOW-RS ingest, 4 clients", "inst/s", "stow", "4_clients/{}", "instances_per_s", True),
    (
        "  server CPU per instance, 4 clients",
        "ms",
        "stow",
        "4_clients/{}",
        "server_cpu_ms_per_instance",
        False,
    ),
    (
        "  voxelhub with --web-processes 2",
        "inst/s",
        "stow",
        "4_clients/{}",
        "instances_per_s",
        True,
        TWO_WEB,
    ),
    (
        "    its server CPU per instance",
        "ms",
        "stow",
        "4_clients/{}",
        "server_cpu_ms_per_instance",
        False,
        TWO_WEB,
    ),
    ("C-STORE ingest (storescu)", "inst/s", "cstore", "{}", "instances_per_s", True),
    (
        "QIDO corpus ingest (16x16, 2 clients)",
        "inst/s",
        "qido",
        "corpus/{}",
        "instances_per_s",
        True,
    ),
    ("QIDO-RS study search p50", "ms", "qido", "{}", "p50_ms", False),
    ("QIDO-RS study search p99", "ms", "qido", "{}", "p99_ms", False),
    (
        "retrieve: series WADO-RS, stored syntax",
        "s",
        "retrieve",
        "series_stored/{}",
        "seconds",
        False,
    ),
    (
        "retrieve: metadata + frames, stored syntax",
        "s",
        "retrieve",
        "frames_stored/{}",
        "seconds",
        False,
    ),
    ("  of which series metadata", "s", "retrieve", "frames_stored/{}", "metadata_seconds", False),
    ("retrieve: metadata + frames, native", "s", "retrieve", "frames_native/{}", "seconds", False),
    ("peak RSS while STOW ingesting", "MB", "memory", "{}", "peak_rss_mb", False),
    ("  peak PSS (shared pages split)", "MB", "memory", "{}", "peak_pss_mb", False),
]


def _figure(sections: dict[str, Any], section: str, key: str, field: str) -> Any:
    node: Any = sections.get(section, {})
    for part in key.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if not isinstance(node, dict):
        return None
    if "error" in node:
        return "error"
    return node.get(field)


def table_rows(sections: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, unit, section, key, field, higher, *variant in ROWS:
        if section not in sections:
            continue
        vox = _figure(sections, section, key.format(*variant or ["voxelhub"]), field)
        ort = _figure(sections, section, key.format("orthanc"), field)
        ratio = None
        if isinstance(vox, float | int) and isinstance(ort, float | int) and ort:
            ratio = vox / ort
        rows.append(
            {
                "benchmark": label,
                "unit": unit,
                "voxelhub": vox,
                "orthanc": ort,
                "ratio": ratio,
                "better": "higher" if higher else "lower",
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def print_table(rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    header = ("benchmark", "unit", "voxelhub", "Orthanc", "vxh/Orthanc", "better")
    lines = [
        (
            r["benchmark"],
            r["unit"],
            _cell(r["voxelhub"]),
            _cell(r["orthanc"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            r["better"],
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    sizes = results["sizes"]
    qido = results["sections"].get("qido", {}).get("corpus", {})
    print(
        f"\nsizes: CT series {sizes['slices']}x{sizes['size']}x{sizes['size']} 16-bit, STOW "
        f"batches of {sizes['batch']}; C-STORE {sizes['cstore_slices']} instances; QIDO corpus "
        f"{qido.get('studies', '-')} studies, {sizes['qido_queries']} queries; memory "
        f"{results['sections'].get('memory', {}).get('gb', 0):.2f} GB"
    )
    for section, error in results["errors"].items():
        print(f"failed: {section}: {error[:600]}")
    for section, figures in results["sections"].items():
        for key, value in _errors(figures):
            print(f"{section} {key}: {value[:300]}")


def _errors(node: Any, path: str = "") -> list[tuple[str, str]]:
    if not isinstance(node, dict):
        return []
    found = [(path, str(node["error"]))] if node.get("error") else []
    for key, value in node.items():
        found += _errors(value, f"{path}/{key}" if path else key)
    return found


def write_results(results: dict[str, Any], *, quick: bool) -> Path:
    folder = HERE / "results"
    folder.mkdir(exist_ok=True)
    # The time of day too, to the second: runs of one day (even of one minute, when
    # sections run separately) are kept side by side.
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    path = folder / f"store-{stamp}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
