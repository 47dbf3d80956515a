"""Benchmarks of voxelhub's compute plane: job dispatch, a triggered built-in, real-time calls.

Run by hand, never from the tests (it starts `voxelhub serve` several times on one home):

    .venv/bin/python bench/jobs.py --quick       # about 3 minutes
    .venv/bin/python bench/jobs.py               # full sizes, about 15 minutes on 2 cores
    .venv/bin/python bench/jobs.py --only dispatch --transports redis

Prints each figure next to its goal and writes them all to
bench/results/jobs-<date>[-quick].json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform as host
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS = ("realtime", "breakdown", "dispatch", "trigger")
TRANSPORTS = ("embedded", "redis")
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
# For the time budget: a first guess of the jobs/s a dispatch run reaches (Sizes say what
# each run costs besides its jobs: starts, warm-ups, cases, the serial run; and the trigger).
ASSUMED_RATE = 20.0
MIN_JOBS = 100
GOALS = {
    "redis_jobs_per_s": 500.0,
    "embedded_jobs_per_s": 50.0,
    "trigger_s": 15.0,
    "realtime_overhead_ms": 20.0,
}


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; `quick` shrinks them so a whole run takes minutes."""

    jobs: int
    http_jobs: int
    serial_jobs: int
    warmup_jobs: int
    http_clients: int
    inprocess_threads: int
    run_timeout_s: float
    concurrency4: bool
    profile_jobs: int
    phase_jobs: int
    realtime_calls: int
    trigger_slices: int
    trigger_size: int
    trigger_batch: int
    trigger_repeats: int
    budget_s: float
    fixed_per_run_s: float
    trigger_s: float

    @classmethod
    def pick(cls, *, quick: bool) -> Sizes:
        if quick:
            return cls(
                jobs=200,
                http_jobs=200,
                serial_jobs=10,
                warmup_jobs=10,
                http_clients=4,
                inprocess_threads=2,
                run_timeout_s=60,
                concurrency4=False,
                profile_jobs=0,
                phase_jobs=50,
                realtime_calls=200,
                trigger_slices=100,
                trigger_size=512,
                trigger_batch=50,
                trigger_repeats=1,
                budget_s=170,
                fixed_per_run_s=8,
                trigger_s=30,
            )
        return cls(
            jobs=2000,
            http_jobs=500,
            serial_jobs=30,
            warmup_jobs=20,
            http_clients=4,
            inprocess_threads=2,
            run_timeout_s=240,
            concurrency4=True,
            profile_jobs=300,
            phase_jobs=200,
            realtime_calls=200,
            trigger_slices=100,
            trigger_size=512,
            trigger_batch=50,
            trigger_repeats=2,
            budget_s=840,
            fixed_per_run_s=15,
            trigger_s=45,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 3 minutes)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--transports", default=",".join(TRANSPORTS), help="embedded, redis or both"
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help=f"a Redis database of the benchmark's own; FLUSHDB before and after "
        f"(default {DEFAULT_REDIS})",
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per dispatch run")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy the workers in one more run per transport: auto = when the "
        "throughput is under half its goal (full runs only)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="time budget of the whole run; later dispatch runs get fewer jobs to keep it "
        "(default 840 full, 170 quick)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="added to the results' file name (jobs-<date>[-quick]-<label>.json), so that "
        "repeated runs of a day do not overwrite each other",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles)")
    args = parser.parse_args(argv)
    for option, allowed in (("only", SECTIONS), ("transports", TRANSPORTS)):
        unknown = set(getattr(args, option).split(",")) - set(allowed)
        if unknown:
            parser.error(f"--{option}: unknown {', '.join(sorted(unknown))}; pick from {allowed}")
    return args


class Runner:
    """Runs the sections in order, keeping each one's figures or its error."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, work: Path) -> None:
        self.args, self.sizes, self.work = args, sizes, work
        self.home = work / "home"
        self.sections = args.only.split(",")
        self.results: dict[str, Any] = {
            "sizes": asdict(sizes),
            "goals": GOALS,
            "figures": {},
            "starts_s": {},
            "errors": {},
        }
        self.started = time.monotonic()
        self.budget_s = float(args.budget_s or sizes.budget_s)
        self.rate = ASSUMED_RATE
        per_transport = 4 + int(sizes.concurrency4) + int(self._may_profile())
        self.runs_left = len(self.transports) * per_transport if "dispatch" in self.sections else 0
        self.fixed_left_s = sizes.fixed_per_run_s * self.runs_left
        if "trigger" in self.sections and "embedded" in self.transports:
            self.fixed_left_s += sizes.trigger_s

    def figure(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        print(f"\n== {key} ==", flush=True)
        load = os.getloadavg()[0]
        started = time.monotonic()
        try:
            figures = compute()
        except Exception as err:  # one broken figure must not lose the others
            self.results["errors"][key] = f"{type(err).__name__}: {err}"[:2000]
            print(f"  failed: {self.results['errors'][key]}", flush=True)
            traceback.print_exc()
            return None
        figures["wall_s"] = time.monotonic() - started
        figures["load_average_1min"] = [load, os.getloadavg()[0]]
        self.results["figures"][key] = figures
        print("  " + _headline(key, figures), flush=True)
        return figures

    @contextlib.contextmanager
    def platform(self, label: str, broker_url: str | None, serve_workers: int) -> Iterator[Any]:
        from _jobs_server import Platform

        platform = Platform(self.home, broker_url=broker_url, serve_workers=serve_workers)
        print(f"\n-- starting voxelhub serve --workers {serve_workers} ({label}) --", flush=True)
        self.results["starts_s"][label] = platform.start()
        try:
            yield platform
        finally:
            platform.stop()

    def run(self) -> None:
        # Always first: it makes the home and the embedded broker's tables before any
        # two workers start together (see Platform.create_broker_tables).
        with self.platform("embedded, no workers", None, 0) as platform:
            platform.create_broker_tables()
            self.no_workers(platform)
        for transport in self.transports:
            url = self.args.redis_url if transport == "redis" else None
            if url:
                _flush(url)
            try:
                if "dispatch" in self.sections or (
                    transport == "embedded" and "trigger" in self.sections
                ):
                    self.serve_workers(transport, url)
                if "dispatch" in self.sections and self.sizes.concurrency4:
                    self.concurrency4(transport, url)
            finally:
                if url:
                    _flush(url)

    @property
    def transports(self) -> list[str]:
        return str(self.args.transports).split(",")

    def no_workers(self, platform: Any) -> None:
        import _jobs_dispatch
        import _jobs_phases
        import _jobs_realtime

        from voxelhub.algorithms.schemas import InputRef

        if "realtime" in self.sections:
            self.figure(
                "realtime", lambda: _jobs_realtime.run(platform, calls=self.sizes.realtime_calls)
            )
        if "breakdown" in self.sections:
            self.figure(
                "breakdown/echo",
                lambda: _jobs_phases.breakdown(
                    platform,
                    slug="echo",
                    cases=_jobs_dispatch.make_cases(platform, self.sizes.phase_jobs, "phases"),
                    inputs=lambda i: {"payload": InputRef(value={"n": i})},
                ),
            )

    def serve_workers(self, transport: str, url: str | None) -> None:
        import _jobs_dispatch
        import _jobs_trigger

        sizes = self.sizes
        with self.platform(f"{transport}, serve --workers 2", url, 2) as platform:
            if "dispatch" in self.sections:
                self.warm_up(platform)
                runs = (
                    ("http", sizes.http_jobs),
                    ("http-batch", self.jobs),
                    ("inprocess", self.jobs),
                    ("inprocess-batch", self.jobs),
                )
                for how, wanted in runs:
                    self.dispatch(
                        f"dispatch/{transport}/serve-w2/{how}", platform, how=how, wanted=wanted
                    )
                self.figure(
                    f"serial/{transport}/serve-w2",
                    lambda: _jobs_dispatch.serial(platform, jobs=sizes.serial_jobs),
                )
                if self.should_profile(transport):
                    self.dispatch(
                        f"profile/{transport}/serve-w2",
                        platform,
                        how="http-batch",
                        wanted=max(sizes.profile_jobs, 50),
                        profile_to=self.work / "profiles" / transport,
                    )
                elif self._may_profile():
                    self.runs_left = max(self.runs_left - 1, 0)
            if transport == "embedded" and "trigger" in self.sections:
                self.fixed_left_s = max(self.fixed_left_s - self.sizes.trigger_s, 0.0)
                self.figure(
                    "trigger",
                    lambda: _jobs_trigger.run(
                        platform,
                        slices=sizes.trigger_slices,
                        size=sizes.trigger_size,
                        batch=sizes.trigger_batch,
                        repeats=sizes.trigger_repeats,
                    ),
                )
            if transport == "embedded":
                self.figure("broker-table/embedded", lambda: _jobs_dispatch.broker_table(platform))

    def concurrency4(self, transport: str, url: str | None) -> None:
        with self.platform(f"{transport}, serve --workers 0", url, 0) as platform:
            platform.add_worker(concurrency=4)
            self.warm_up(platform)
            self.dispatch(
                f"dispatch/{transport}/worker-c4/inprocess",
                platform,
                how="inprocess",
                wanted=self.jobs,
            )

    @property
    def jobs(self) -> int:
        return int(self.args.jobs or self.sizes.jobs)

    def dispatch(self, key: str, platform: Any, *, how: str, wanted: int, **options: Any) -> None:
        """One dispatch run, shrunk when needed to keep the whole run within its budget."""
        import _jobs_dispatch

        left = self.budget_s - (time.monotonic() - self.started) - self.fixed_left_s
        share = max(left, 0.0) / max(self.runs_left, 1)
        jobs = min(wanted, max(MIN_JOBS, int(self.rate * share * 0.8)))
        timeout_s = min(self.sizes.run_timeout_s, max(30.0, share))
        clients = self.sizes.inprocess_threads if how == "inprocess" else self.sizes.http_clients
        figures = self.figure(
            key,
            functools.partial(
                _jobs_dispatch.run,
                platform,
                label=key.replace("/", "-"),
                jobs=jobs,
                how=how,
                clients=clients,
                timeout_s=timeout_s,
                **options,
            ),
        )
        self.runs_left = max(self.runs_left - 1, 0)
        self.fixed_left_s = max(self.fixed_left_s - self.sizes.fixed_per_run_s, 0.0)
        if figures is not None:
            figures["jobs_wanted"] = wanted
            self.rate = figures.get("execution_per_s") or self.rate

    def _may_profile(self) -> bool:
        return self.args.profile == "always" or (
            self.args.profile == "auto" and self.sizes.profile_jobs > 0
        )

    def should_profile(self, transport: str) -> bool:
        if not self._may_profile():
            return False
        if self.args.profile == "always":
            return True
        measured = self.results["figures"].get(f"dispatch/{transport}/serve-w2/inprocess", {})
        goal = GOALS[f"{transport}_jobs_per_s"]
        return (measured.get("throughput_per_s") or 0.0) < goal / 2

    def warm_up(self, platform: Any) -> None:
        """Untimed jobs first: imports, connections and caches of every worker process."""
        import _jobs_dispatch

        count = self.sizes.warmup_jobs
        cases = _jobs_dispatch.make_cases(platform, count, "warmup")
        created = _jobs_dispatch.create_http(platform, cases, clients=2)
        _jobs_dispatch.wait_final(platform, created.ids, timeout_s=120)


def _flush(url: str) -> None:
    from _jobs_server import flush_redis

    flush_redis(url)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _headline(key: str, f: dict[str, Any]) -> str:
    if key.startswith(("dispatch", "profile", "serial")):
        line = (
            f"{f['states']} throughput {f['throughput_per_s'] or 0:.1f}/s (creation "
            f"{f['creation_per_s'] or 0:.1f}/s, execution {f['execution_per_s'] or 0:.1f}/s); "
            f"dispatch p50 {_ms(f['dispatch']['p50_ms'])} ms p95 {_ms(f['dispatch']['p95_ms'])}"
            f" ms p99 {_ms(f['dispatch'].get('p99_ms'))} ms; end-to-end p50 "
            f"{_ms(f['end_to_end']['p50_ms'])} ms; CPU ms/job "
            + ", ".join(f"{k} {v:.1f}" for k, v in f["cpu_ms_per_job"].items())
            + f"; others' CPU {f['others_cpu_seconds']:.1f} s, steal {f['steal_seconds']:.1f} s"
        )
        for error in f["errors"][:2]:
            line += f"\n    ! {error[:300]}"
        for phase, ms in list(f.get("profile", {}).get("ms_per_job", {}).items())[:10]:
            line += f"\n    {ms:7.1f} ms/job  {phase}"
        return line
    if key == "trigger":
        parts = "; ".join(f"{k} {v:.2f}" for k, v in f["parts_s"].items())
        return f"{f['state']} in {f['total_s']:.2f} s: {parts}"
    if key == "realtime":
        return (
            f"invoke p50 {_ms(f['invoke_http']['p50_ms'])} ms p95 "
            f"{_ms(f['invoke_http']['p95_ms'])} ms; model alone p50 "
            f"{f['model_direct']['call']['p50_ms']:.3f} ms; overhead p50 "
            f"{_ms(f['overhead_p50_ms'])} ms"
        )
    return json.dumps(f, default=str)[:400]


def describe() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "voxelhub": version("voxelhub"),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "machine": host.platform(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    from _jobs_report import dispatch_rows, other_rows, print_table, serial_rows, write_results

    args = parse_args(argv)
    sizes = Sizes.pick(quick=args.quick)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vxhjobs-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args, sizes, work)
    runner.results["setup"] = describe()
    print(json.dumps(runner.results["setup"]), flush=True)
    started = time.monotonic()
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.results["errors"]["interrupted"] = "Ctrl-C"
    except Exception as err:  # a server that would not start: report what there is
        runner.results["errors"]["run"] = f"{type(err).__name__}: {err}"[:2000]
        traceback.print_exc()
    finally:
        runner.results["wall_seconds"] = time.monotonic() - started
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    results = runner.results
    rows = (
        dispatch_rows(results["figures"], GOALS)
        + serial_rows(results["figures"])
        + other_rows(results["figures"], GOALS)
    )
    results["table"] = rows
    print_table(rows)
    for key, error in results["errors"].items():
        print(f"failed: {key}: {error[:600]}")
    path = write_results(results, HERE / "results", quick=args.quick, label=args.label)
    print(f"\nfigures written to {path} (wall {results['wall_seconds']:.0f} s)")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
