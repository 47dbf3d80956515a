"""The container I/O contract shared by every kind of algorithm.

A job's working directory holds `input/` (with `input/inputs.json`), `output/` and `model/`.
Inside a sandbox or container they are mounted at `/input`, `/output` and `/opt/ml/model`;
built-in algorithms get the host paths. The executor runs the algorithm and returns an
`ExecutionResult`; what the algorithm wrote under `output/` is collected afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

INPUTS_JSON = "inputs.json"
CONTAINER_INPUT = "/input"
CONTAINER_OUTPUT = "/output"
CONTAINER_MODEL = "/opt/ml/model"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputEntry(Frozen):
    """One input as the algorithm sees it in inputs.json."""

    interface: str
    kind: str
    path: str | None = Field(default=None, description="Relative to /input, for files")
    value: Any = Field(default=None, description="The value itself, for scalars and JSON")


class InputsManifest(Frozen):
    job_id: str
    algorithm: str
    inputs: list[InputEntry]


class Limits(Frozen):
    """What an execution may use; enforced by the executor."""

    memory_mb: int = Field(default=2048, gt=0)
    time_limit_s: float = Field(default=600, gt=0)
    cpus: float = Field(default=1.0, gt=0)
    gpus: int = Field(default=0, ge=0)
    network: bool = False

    @classmethod
    def of_resources(cls, resources: Mapping[str, Any]) -> Limits:
        """The limits an algorithm version's declared resources give (defaults for the rest)."""
        known = ("memory_mb", "time_limit_s", "cpus", "gpus")
        return cls.model_validate({key: resources[key] for key in known if key in resources})


class ExecutionRequest(Frozen):
    """One run of an algorithm over a prepared working directory."""

    job_id: str
    workdir: Path
    command: list[str] = Field(default_factory=list, description="Overrides the image's own")
    image: str | None = Field(default=None, description="Container image reference")
    package_dir: Path | None = Field(default=None, description="Unpacked user package")
    entrypoint: str | None = Field(default=None, description="Built-in algorithm name")
    limits: Limits = Limits()
    env: dict[str, str] = Field(default_factory=dict)

    @property
    def input_dir(self) -> Path:
        return self.workdir / "input"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    @property
    def model_dir(self) -> Path:
        return self.workdir / "model"


class Outcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"  # non-zero exit
    timed_out = "timed_out"
    out_of_memory = "out_of_memory"
    cancelled = "cancelled"
    error = "error"  # the executor itself could not run it


class ExecutionResult(Frozen):
    outcome: Outcome
    exit_code: int | None = None
    message: str = Field(
        default="", description="For people: why it failed, e.g. the last line of stderr"
    )
    stdout_tail: str = ""
    stderr_tail: str = ""
    duration_s: float = 0.0
    max_rss_mb: float | None = None


class Executor(Protocol):
    """Runs one kind of algorithm (built-in, sandboxed package, container)."""

    name: str

    def available(self) -> str | None:
        """None when this executor can run here, else why not (e.g. "podman not installed")."""
        ...

    def run(self, request: ExecutionRequest, *, cancelled: Any = None) -> ExecutionResult:
        """Run to completion; `cancelled` is a threading.Event that stops it early."""
        ...


def prepare_workdir(workdir: Path) -> None:
    for name in ("input", "output", "model"):
        (workdir / name).mkdir(parents=True, exist_ok=True)


def last_line(text: str) -> str:
    """The last non-empty line (what a user sees when an algorithm fails)."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:1000]
    return ""
