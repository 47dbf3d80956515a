"""`voxelhub train segmentation` on an archive's cases, and `voxelhub run` on a whole archive."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import SimpleITK as sitk  # noqa: N813 - the library's own spelling
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import Account
from tests.jobs.conftest import (  # noqa: F401 - fixtures
    Worker,
    builtins_registered,
    start_worker,
    worker_env,
)
from voxelhub.archives import values_service
from voxelhub.archives.models import Case
from voxelhub.cli import app
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.segment.synthetic import ct_case

runner = CliRunner()


def _mha(array, geometry) -> bytes:  # type: ignore[no-untyped-def]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    path = Path(f"/tmp/vxh-{uuid.uuid4().hex}.mha")
    try:
        sitk.WriteImage(image, str(path))
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _archive_with_cases(
    client: TestClient, runtime: Runtime, account: Account, *, labelled: int, unlabelled: int
) -> str:
    archive = client.post("/api/v1/archives", json={"name": "Spleens"}, headers=account.headers)
    archive_id = archive.json()["id"]
    for index in range(labelled + unlabelled):
        made = client.post(
            f"/api/v1/archives/{archive_id}/cases",
            json={"title": f"case {index}"},
            headers=account.headers,
        ).json()
        synthetic = ct_case(shape=(16, 32, 32), seed=index)
        with session_scope(runtime.database_url) as db:
            case = db.get(Case, uuid.UUID(made["id"]))
            assert case is not None
            image = _mha(synthetic.image, synthetic.geometry)
            values_service.put_file(
                db, runtime.store, case, "image", filename="ct.mha", data=io.BytesIO(image)
            )
            if index < labelled:
                mask = _mha(synthetic.labels, synthetic.geometry)
                values_service.put_file(
                    db, runtime.store, case, "label", filename="mask.mha", data=io.BytesIO(mask)
                )
    return str(archive_id)


@pytest.mark.usefixtures("cli_env")
def test_train_segmentation_writes_a_bundle_from_the_archive(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    user: Account = make_user("trainer")
    _archive_with_cases(client, runtime, user, labelled=3, unlabelled=1)
    target = tmp_path / "bundle"
    result = runner.invoke(
        app,
        [
            "train", "segmentation", "--archive", "Spleens", "--epochs", "2",
            "--roi", "16,16,16", "--labels", "spleen", "--output", str(target),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "case 3" in output and "no value 'label'" in output
    assert "best validation Dice" in output and "(2 training, 1 validation cases)" in output
    metadata = json.loads((target / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channels == {"0": "background", "1": "spleen"}
    assert (target / "models" / "model.ts").is_file()


@pytest.mark.usefixtures("cli_env")
def test_train_segmentation_refuses_an_archive_without_labels(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    user: Account = make_user("trainer")
    _archive_with_cases(client, runtime, user, labelled=1, unlabelled=1)
    result = runner.invoke(
        app, ["train", "segmentation", "--archive", "Spleens", "--output", str(tmp_path / "b")]
    )
    assert result.exit_code == 2
    assert "at least 2 labelled cases" in " ".join(result.output.split())
    missing = runner.invoke(app, ["train", "segmentation", "--archive", "Nowhere"])
    assert missing.exit_code == 2 and "no archive named 'Nowhere'" in missing.output


@pytest.mark.slow
def test_run_on_a_whole_archive_reports_done_and_failed_cases(
    client: TestClient,
    live_server: str,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    start_worker: Callable[..., Worker],  # noqa: F811 - the fixture imported above
    builtins_registered: None,  # noqa: F811 - the fixture imported above
) -> None:
    user: Account = make_user("batch")
    archive_id = client.post(
        "/api/v1/archives", json={"name": "Batch"}, headers=user.headers
    ).json()["id"]
    for title in ("first", "second", "without meta"):
        made = client.post(
            f"/api/v1/archives/{archive_id}/cases", json={"title": title}, headers=user.headers
        ).json()
        if title != "without meta":
            with session_scope(runtime.database_url) as db:
                case = db.get(Case, uuid.UUID(made["id"]))
                assert case is not None
                body = {"kind": "json", "value": {"title": title}}
                values_service.set_scalar(db, runtime.store, case, "meta", body)
    start_worker()
    result = runner.invoke(
        app,
        [
            "run", "echo", "--archive", archive_id, "--input", "payload=meta",
            "--server", live_server, "--token", user.token,
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "2 of 3 case(s) done, 1 failed" in output
    assert "without meta" in output and "not started" in output
