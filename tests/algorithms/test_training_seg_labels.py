"""A DICOM SEG stored next to its CT is a training label for `voxelhub train segmentation`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import Account, stow
from voxelhub.algorithms.training import load_training_data
from voxelhub.archives import values_service
from voxelhub.archives.models import Archive, Case
from voxelhub.archives.values import DicomSeriesValue, as_stored
from voxelhub.cli import app
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.segment.dicom_out import AlgorithmInfo, segmentation
from voxelhub.segment.labels import coded_label
from voxelhub.segment.synthetic import SyntheticCase, ct_case, dicom_series

runner = CliRunner()


def _series_value(datasets: list[Any]) -> dict[str, object]:
    first = datasets[0]
    return as_stored(
        DicomSeriesValue(
            study_instance_uid=first.StudyInstanceUID,
            series_instance_uid=first.SeriesInstanceUID,
            modality=first.Modality,
            number_of_instances=len(datasets),
        )
    )


def _archive_with_seg_labels(
    client: TestClient, runtime: Runtime, account: Account, count: int
) -> tuple[str, list[SyntheticCase]]:
    """Cases of a CT series and a SEG of it (the last case's SEG is of the first CT)."""
    archive_id = client.post(
        "/api/v1/archives", json={"name": "Segs"}, headers=account.headers
    ).json()["id"]
    truths, first_ct = [], None
    for index in range(count):
        truth = ct_case(shape=(16, 32, 32), seed=index)
        ct = dicom_series(truth.image, truth.geometry, series_description="Abdomen CT")
        seg_of = ct if index < count - 1 or first_ct is None else first_ct
        seg = segmentation(
            seg_of,
            truths[0].labels if seg_of is first_ct else truth.labels,
            [coded_label(1, "spleen")],
            algorithm=AlgorithmInfo("reader", "1"),
            series_description="Spleen by a reader",
        )
        stow(client, account, archive_id, [*ct, seg])
        made = client.post(
            f"/api/v1/archives/{archive_id}/cases",
            json={"title": f"case {index}"},
            headers=account.headers,
        ).json()
        with session_scope(runtime.database_url) as db:
            case = db.get(Case, uuid.UUID(made["id"]))
            assert case is not None
            values_service.set_series(db, runtime.store, case, "image", _series_value(ct))
            values_service.set_series(db, runtime.store, case, "label", _series_value([seg]))
        truths.append(truth)
        first_ct = first_ct or ct
    return str(archive_id), truths


def test_a_seg_is_read_as_the_label_map_of_the_series_it_references(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    user: Account = make_user("trainer")
    archive_id, truths = _archive_with_seg_labels(client, runtime, user, 3)
    with session_scope(runtime.database_url) as db:
        archive = db.get(Archive, uuid.UUID(archive_id))
        assert archive is not None
        data = load_training_data(
            db,
            runtime.store,
            archive,
            image_interface="image",
            label_interface="label",
            scratch=tmp_path,
        )
    assert [c.name for c in data.cases] == ["case 0", "case 1"]
    for case, truth in zip(data.cases, truths, strict=False):
        np.testing.assert_array_equal(case.label, truth.labels)
        np.testing.assert_array_equal(case.image, truth.image.astype(np.float32))
    assert data.label_names == ("spleen",) and data.modality == "CT"
    [skipped] = data.skipped
    assert skipped.case == "case 2" and "not the image series" in skipped.reason


@pytest.mark.usefixtures("cli_env")
def test_train_segmentation_takes_seg_labels_and_their_names(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    user: Account = make_user("trainer")
    _archive_with_seg_labels(client, runtime, user, 4)
    target = tmp_path / "bundle"
    result = runner.invoke(
        app,
        [
            "train", "segmentation", "--archive", "Segs", "--epochs", "1",
            "--roi", "16,16,16", "--output", str(target),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # The skipped cases are a table whose cells wrap at the terminal's width.
    output = " ".join(result.output.translate(str.maketrans("", "", "│┃")).split())
    assert "case 3" in output and "not the image series" in output
    assert "(2 training, 1 validation cases)" in output
    metadata = json.loads((target / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channels == {"0": "background", "1": "spleen"}, "named by the SEG's segment"
