"""Reading a run's scalar outputs from /output: what is accepted and what is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from voxelhub.algorithms import io
from voxelhub.archives.values import ValueKind


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "output"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("kind", "written", "body"),
    [
        (ValueKind.json, {"a": [1, 2]}, {"kind": ValueKind.json, "value": {"a": [1, 2]}}),
        (ValueKind.number, 42.5, {"kind": ValueKind.number, "value": 42.5}),
        (ValueKind.report, "Normal study.", {"kind": ValueKind.report, "text": "Normal study."}),
    ],
)  # fmt: skip
def test_a_scalar_output_is_read_back(
    output_dir: Path, kind: ValueKind, written: object, body: dict[str, object]
) -> None:
    (output_dir / "result.json").write_text(json.dumps(written), encoding="utf-8")
    assert io.read_scalar(output_dir, interface="result", kind=kind) == body


def test_a_missing_output_says_which_file_was_expected(output_dir: Path) -> None:
    with pytest.raises(io.OutputError, match=r"expected /output/result\.json"):
        io.read_scalar(output_dir, interface="result", kind=ValueKind.json)


def test_a_folder_is_no_output(output_dir: Path) -> None:
    (output_dir / "result.json").mkdir()
    with pytest.raises(io.OutputError, match=r"expected /output/result\.json"):
        io.read_scalar(output_dir, interface="result", kind=ValueKind.json)


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_link_is_refused_wherever_it_points(
    output_dir: Path, tmp_path: Path, target_exists: bool
) -> None:
    secret = tmp_path / "secret.json"
    if target_exists:
        secret.write_text('{"password": "x"}')
    (output_dir / "result.json").symlink_to(secret)
    with pytest.raises(io.OutputError, match=r"outputs must be plain files"):
        io.read_scalar(output_dir, interface="result", kind=ValueKind.json)


def test_an_output_over_the_size_limit_is_refused(
    output_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 10)
    (output_dir / "result.json").write_text(json.dumps("x" * 20))
    with pytest.raises(io.OutputError, match="larger than"):
        io.read_scalar(output_dir, interface="result", kind=ValueKind.json)


@pytest.mark.parametrize(
    ("kind", "content", "problem"),
    [
        (ValueKind.json, b"{not json", "not valid JSON"),
        (ValueKind.json, b'"\xff\xfe"', "not valid JSON"),
        (ValueKind.number, b"true", "must hold a number"),
        (ValueKind.text, b"3", "must hold a JSON string"),
    ],
)
def test_an_output_not_of_its_kind_says_why(
    output_dir: Path, kind: ValueKind, content: bytes, problem: str
) -> None:
    (output_dir / "result.json").write_bytes(content)
    with pytest.raises(io.OutputError, match=problem):
        io.read_scalar(output_dir, interface="result", kind=kind)


def test_a_fifo_is_no_output_and_does_not_block(output_dir: Path) -> None:
    os.mkfifo(output_dir / "result.json")
    with pytest.raises(io.OutputError, match=r"expected /output/result\.json"):
        io.read_scalar(output_dir, interface="result", kind=ValueKind.json)
