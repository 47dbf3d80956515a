"""MONAI bundles as algorithms: upload, trigger on arriving CT, SEG back in the store.

The bundle is a small U-Net trained on synthetic CTs (`tests.segment.test_train`), so the
SEG it writes is meaningful and is compared with the true organ.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from tests.conftest import Account, needs_bwrap
from tests.jobs.conftest import Worker, start_worker, worker_env  # noqa: F401 - fixtures
from tests.segment.test_train import SHAPE, dice, spleen_bundle
from tests.store.conftest import client_for
from voxelhub.segment.synthetic import SyntheticCase, ct_case, dicom_series

OUTPUTS = [
    {"interface": "segmentation", "kind": "dicom_series"},
    {"interface": "report", "kind": "dicom_series"},
    {"interface": "volumes", "kind": "json"},
    {"interface": "mask", "kind": "image"},
]
SPEC = {
    "kind": "package",
    "inputs": [{"interface": "ct", "kind": "dicom_series"}],
    "outputs": OUTPUTS,
    "resources": {"memory_mb": 4096, "time_limit_s": 300},
}


def zipped(folder: Path) -> bytes:
    """The bundle folder as a user uploads it: a zip with the folder on top."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spleen_bundle(tmp_path_factory.getbasetemp()).path


def register(
    client: TestClient, account: Account, slug: str, upload: bytes
) -> tuple[int, dict[str, Any]]:
    made = client.post(
        "/api/v1/algorithms", json={"slug": slug, "title": slug}, headers=account.headers
    )
    assert made.status_code == 201, made.text
    version = client.post(
        f"/api/v1/algorithms/{slug}/versions",
        data={"spec": json.dumps(SPEC)},
        files={"file": ("bundle.zip", upload)},
        headers=account.headers,
    )
    return version.status_code, version.json()


def wait_for_jobs(client: TestClient, account: Account, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 240
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs", headers=account.headers).json()
        if len(jobs) >= count and all(
            j["state"] in ("succeeded", "failed", "cancelled") for j in jobs
        ):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"{count} job(s) did not finish: {jobs}")


def seg_mask(seg: Dataset, ct: list[Dataset]) -> np.ndarray:  # type: ignore[type-arg]
    """The SEG's segment 1 as a (z, y, x) array in the CT's slice order."""
    parsed = hd.seg.Segmentation.from_dataset(seg)
    pixels = parsed.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in ct], segment_numbers=[1]
    )
    return np.asarray(pixels[..., 0])


@needs_bwrap
@pytest.mark.slow
def test_uploaded_bundle_segments_a_stowed_ct_into_a_seg_in_the_store(
    client: TestClient,
    live_server: str,
    make_user,  # type: ignore[no-untyped-def]
    start_worker: Callable[..., Worker],  # noqa: F811 - the fixture imported above
    bundle: Path,
) -> None:
    user: Account = make_user("radiologist")
    status, version = register(client, user, "spleen-seg", zipped(bundle))
    assert status == 201, version
    archive = client.post("/api/v1/archives", json={"name": "Abdomen"}, headers=user.headers)
    archive_id = archive.json()["id"]
    trigger = client.post(
        f"/api/v1/archives/{archive_id}/triggers",
        json={"algorithm": "spleen-seg", "input_interface": "ct", "modality": "CT"},
        headers=user.headers,
    )
    assert trigger.status_code == 201, trigger.text
    start_worker()
    truth: SyntheticCase = ct_case(shape=SHAPE, seed=4242)
    ct = dicom_series(truth.image, truth.geometry, series_description="Abdomen CT")
    dicomweb = client_for(f"{live_server}/dicom-web/archives/{archive_id}", user)
    dicomweb.store_instances(ct)

    [job] = wait_for_jobs(client, user, 1)
    assert job["state"] == "succeeded", job
    study_uid, ct_uid = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    series = {s["0020000E"]["Value"][0]: s for s in dicomweb.search_for_series(study_uid)}
    modalities = {uid: s["00080060"]["Value"][0] for uid, s in series.items()}
    assert sorted(modalities.values()) == ["CT", "SEG", "SR"]
    seg_uid = next(uid for uid, m in modalities.items() if m == "SEG")
    assert job["outputs"]["segmentation"]["series_instance_uids"] == [seg_uid]
    [instance] = dicomweb.search_for_instances(study_uid, seg_uid)
    seg = dicomweb.retrieve_instance(study_uid, seg_uid, instance["00080018"]["Value"][0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid
    assert seg.SegmentSequence[0].SegmentLabel.lower() == "spleen"
    assert dice(seg_mask(seg, ct), truth.labels) >= 0.8

    values = client.get(
        f"/api/v1/archives/{archive_id}/cases/{job['case_id']}", headers=user.headers
    ).json()["values"]
    by_interface = {v["interface"]: v for v in values}
    assert by_interface["spleen-seg.mask"]["kind"] == "image"
    volumes = by_interface["spleen-seg.volumes"]["value"]["value"]
    [spleen] = volumes["labels"]
    true_ml = float(truth.labels.sum()) * float(np.prod(truth.geometry.spacing)) / 1000
    assert spleen["name"] == "spleen" and abs(spleen["volume_ml"] - true_ml) < 0.25 * true_ml


def test_a_malformed_bundle_is_refused_at_upload(
    client: TestClient,
    make_user,  # type: ignore[no-untyped-def]
    bundle: Path,
    tmp_path: Path,
) -> None:
    user: Account = make_user("editor")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "configs" / "inference.json").write_text('{"preprocessing": [,]}')
    status, body = register(client, user, "broken-config", zipped(broken))
    assert status == 400
    assert "configs/inference.json is not valid JSON: line 1" in body["message"]

    shutil.copytree(bundle, broken, dirs_exist_ok=True)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    del config["inferer"]
    (broken / "configs" / "inference.json").write_text(json.dumps(config))
    status, body = register(client, user, "no-inferer", zipped(broken))
    assert status == 400 and "lacks inferer" in body["message"]

    shutil.copytree(bundle, broken, dirs_exist_ok=True)
    (broken / "models" / "model.pt").write_bytes(b"not a checkpoint")
    status, body = register(client, user, "bad-weights", zipped(broken))
    assert status == 400 and "models/model.pt is not a PyTorch state dict" in body["message"]

    shutil.copytree(bundle, broken, dirs_exist_ok=True)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    del metadata["network_data_format"]["outputs"]
    (broken / "configs" / "metadata.json").write_text(json.dumps(metadata))
    status, body = register(client, user, "no-outputs", zipped(broken))
    assert status == 400 and "network_data_format.outputs" in body["message"]

    for slug in ("broken-config", "no-inferer", "bad-weights", "no-outputs"):
        algorithm = client.get(f"/api/v1/algorithms/{slug}", headers=user.headers).json()
        assert algorithm["latest"] is None, "nothing is stored for a refused upload"


@needs_bwrap
@pytest.mark.slow
def test_realtime_invoke_answers_from_a_warm_bundle(
    client: TestClient,
    make_user,  # type: ignore[no-untyped-def]
    bundle: Path,
) -> None:
    from tests.conftest import stow
    from voxelhub.algorithms.warm import warm_bundles

    user: Account = make_user("caller")
    status, version = register(client, user, "spleen-now", zipped(bundle))
    assert status == 201, version
    archive_id = client.post("/api/v1/archives", json={"name": "Now"}, headers=user.headers).json()[
        "id"
    ]
    truth = ct_case(shape=SHAPE, seed=77)
    ct = dicom_series(truth.image, truth.geometry)
    stow(client, user, archive_id, ct)
    given = {"ct": {"archive_id": archive_id, "series_instance_uid": ct[0].SeriesInstanceUID}}
    starts = warm_bundles().starts
    try:
        for _ in range(2):
            answer = client.post(
                "/api/v1/algorithms/spleen-now/invoke",
                json={"inputs": given},
                headers=user.headers,
            )
            assert answer.status_code == 200, answer.text
            outputs = answer.json()["outputs"]
            assert set(outputs) == {"volumes", "mask"}, "SEG and SR go to the store by jobs"
            assert outputs["volumes"]["labels"][0]["name"] == "spleen"
            assert outputs["mask"]["filename"] == "mask.mha"
        assert warm_bundles().starts == starts + 1, "the second call reuses the loaded model"
    finally:
        warm_bundles().close()
