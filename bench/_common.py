"""What the benchmarks share: their sizes, their data, and small helpers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _data import SeriesFiles, write_series
from _servers import CpuMeter

from voxelhub.dicom.synthetic import PatientInfo

MB = 1024 * 1024
SETTLE_S = 1.0


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; `quick` shrinks them so a whole run takes minutes."""

    slices: int
    size: int
    batch: int
    stow_clients: tuple[int, ...]
    stow_rounds: int
    cstore_slices: int
    qido_studies: int
    qido_queries: int
    qido_ingest_budget_s: float
    retrieve_repeats: int
    memory_series: int
    memory_clients: int
    stow_time_limit_s: float

    @classmethod
    def pick(cls, *, quick: bool) -> Sizes:
        if quick:
            return cls(
                slices=100,
                size=512,
                batch=50,
                stow_clients=(1, 4),
                stow_rounds=1,
                cstore_slices=100,
                qido_studies=500,
                qido_queries=100,
                qido_ingest_budget_s=60,
                retrieve_repeats=1,
                memory_series=4,
                memory_clients=4,
                stow_time_limit_s=60,
            )
        return cls(
            slices=500,
            size=512,
            batch=50,
            stow_clients=(1, 4),
            stow_rounds=3,
            cstore_slices=500,
            qido_studies=10_000,
            qido_queries=500,
            qido_ingest_budget_s=300,
            retrieve_repeats=3,
            memory_series=8,
            memory_clients=4,
            stow_time_limit_s=300,
        )


class Data:
    """Part-10 files, written on first use under `root`."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root, self.sizes = root, sizes
        self._count = 0

    def series(self, label: str, *, slices: int | None = None) -> SeriesFiles:
        self._count += 1
        patient = PatientInfo(patient_id=f"BENCH{self._count:04d}", patient_name=f"BENCH^{label}")
        return write_series(
            self.root / label,
            slices=slices or self.sizes.slices,
            size=self.sizes.size,
            patient=patient,
        )


def settle() -> None:
    """Write back dirty pages and pause, so one server's writes do not slow the next run."""
    os.sync()
    time.sleep(SETTLE_S)


def stow_figures(outcome: Any, seconds: float, cpu: CpuMeter | None = None) -> dict[str, Any]:
    return {
        "instances_per_s": outcome.stored / seconds if seconds else 0.0,
        "seconds": seconds,
        "server_cpu_seconds": cpu.seconds if cpu else None,
        "server_cpu_seconds_by_process": cpu.by_kind if cpu else None,
        "server_cpu_ms_per_instance": 1000 * cpu.seconds / outcome.stored
        if cpu and outcome.stored
        else None,
        "sent": outcome.sent,
        "stored": outcome.stored,
        "failed": outcome.failed,
        "mb_sent": outcome.bytes_sent / MB,
        "errors": outcome.errors,
        "request_seconds": outcome.request_seconds[:100],
    }


def say(message: str, errors: list[str] | None = None) -> None:
    print(f"  {message}", flush=True)
    for error in (errors or [])[:3]:
        print(f"    ! {error[:500]}", flush=True)
