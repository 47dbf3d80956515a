"""Multi-model endpoints serving MONAI bundle algorithms: loaded on first use, evicted LRU.

The bundles are real MONAI bundles with the model zoo's spleen configs (`tests.segment.
bundles`), uploaded as algorithm packages; each loaded model is a warm sandboxed process
whose resident memory counts against the endpoint's budget.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import SimpleITK
from fastapi.testclient import TestClient

from tests.conftest import Account, needs_bwrap
from tests.segment.bundles import SPLEEN_METADATA, spleen_inference, spleen_network, write_bundle
from voxelhub.algorithms import endpoints
from voxelhub.algorithms.endpoint_bundles import LoadedBundle
from voxelhub.algorithms.modelcache import ModelCache
from voxelhub.segment.synthetic import ct_case

pytestmark = [
    pytest.mark.slow,
    needs_bwrap,
]
SPEC = {
    "kind": "package",
    "inputs": [{"interface": "ct", "kind": "image"}],
    "outputs": [{"interface": "volumes", "kind": "json"}, {"interface": "mask", "kind": "image"}],
    "resources": {"memory_mb": 4096, "time_limit_s": 300},
}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    endpoints._cache = ModelCache(budget_mb=1_000_000, dispose=endpoints.release)
    yield
    endpoints.cache().clear()
    endpoints._cache = None


def bundle_zip(channels: list[int]) -> bytes:
    """A spleen bundle (zoo configs, random weights of a U-Net with `channels`), zipped."""
    with tempfile.TemporaryDirectory() as scratch:
        root = write_bundle(
            Path(scratch) / "spleen",
            dict(SPLEEN_METADATA, name=f"Spleen {channels}"),
            spleen_inference(channels=channels, roi=32),
            spleen_network(channels),
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, f"spleen/{path.relative_to(root)}")
        return buffer.getvalue()


def register(client: TestClient, admin: Account, slug: str, channels: list[int]) -> None:
    made = client.post(
        "/api/v1/algorithms",
        json={"slug": slug, "title": slug, "public": True},
        headers=admin.headers,
    )
    assert made.status_code == 201, made.text
    version = client.post(
        f"/api/v1/algorithms/{slug}/versions",
        data={"spec": json.dumps(SPEC)},
        files={"file": ("bundle.zip", bundle_zip(channels))},
        headers=admin.headers,
    )
    assert version.status_code == 201, version.text


def add_model(client: TestClient, admin: Account, model: str, slug: str) -> None:
    added = client.put(
        f"/api/v1/endpoints/organs/models/{model}", data={"algorithm": slug}, headers=admin.headers
    )
    assert added.status_code == 201, added.text
    assert added.json()["runtime"] == "algorithm"


def ct_input() -> dict[str, Any]:
    case = ct_case(shape=(24, 40, 40), spacing=(1.5, 1.5, 2.0), seed=3)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ct.mha"
        SimpleITK.WriteImage(case.images()["ct"], str(path))
        data = base64.b64encode(path.read_bytes()).decode()
    return {"ct": {"filename": "ct.mha", "data": data}}


def invoke(client: TestClient, account: Account, model: str, inputs: dict[str, Any]) -> Any:
    answer = client.post(
        "/api/v1/endpoints/organs/invoke",
        json={"model": model, "inputs": inputs},
        headers=account.headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body["outputs"]) == {"volumes", "mask"}
    assert body["outputs"]["volumes"]["labels"][0]["name"] == "spleen"
    mask = base64.b64decode(body["outputs"]["mask"]["data"])
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "mask.mha").write_bytes(mask)
        size = SimpleITK.ReadImage(str(Path(scratch) / "mask.mha")).GetSize()
    assert size == (40, 40, 24), "the mask is on the input's grid"
    return body


def listed(client: TestClient, account: Account) -> dict[str, dict[str, Any]]:
    rows = client.get("/api/v1/endpoints/organs/models", headers=account.headers).json()
    return {row["model"]: row for row in rows}


def process_of(model: str) -> LoadedBundle:
    def absent() -> tuple[Any, float]:
        raise AssertionError(f"{model} is not loaded")

    loaded: LoadedBundle = endpoints.cache().get(f"endpoints/organs/{model}.algorithm", absent)
    return loaded


def wait_closed(loaded: LoadedBundle) -> None:
    deadline = time.monotonic() + 60
    while loaded.warm.alive and time.monotonic() < deadline:
        time.sleep(0.1)


def test_bundles_load_on_first_use_are_evicted_lru_and_added_without_restart(
    client: TestClient,
    admin: Account,
    make_user,  # type: ignore[no-untyped-def]
) -> None:
    caller: Account = make_user("caller")
    register(client, admin, "spleen-small", [4, 8, 16])
    register(client, admin, "spleen-large", [8, 16, 32])
    add_model(client, admin, "small", "spleen-small")
    inputs = ct_input()

    first = invoke(client, caller, "small", inputs)
    again = invoke(client, caller, "small", inputs)
    assert first["cold"] and not again["cold"], "the second call finds the model loaded"
    assert again["outputs"]["volumes"]["labels"] == first["outputs"]["volumes"]["labels"]
    rows = listed(client, caller)
    assert rows["small"]["loaded"] and rows["small"]["memory_mb"] > 50, rows
    small = process_of("small")

    # Room for one bundle process, not two: the least recently used one is closed.
    endpoints.cache().budget_mb = rows["small"]["memory_mb"] * 1.5
    # A model added while serving is served without a restart.
    add_model(client, admin, "large", "spleen-large")
    assert invoke(client, caller, "large", inputs)["cold"]
    rows = listed(client, caller)
    assert rows["large"]["loaded"] and not rows["small"]["loaded"], rows
    assert endpoints.cache().evictions == 1
    wait_closed(small)
    assert not small.warm.alive, "an evicted bundle's process is closed"

    large = process_of("large")
    assert invoke(client, caller, "small", inputs)["cold"], "an evicted model loads again"
    wait_closed(large)
    assert not large.warm.alive and endpoints.cache().evictions == 2


def test_bundle_models_say_what_is_wrong(
    client: TestClient,
    admin: Account,
    make_user,  # type: ignore[no-untyped-def]
) -> None:
    caller: Account = make_user("caller")
    unknown = client.put(
        "/api/v1/endpoints/organs/models/m", data={"algorithm": "nope"}, headers=admin.headers
    )
    assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
    neither = client.put("/api/v1/endpoints/organs/models/m", headers=admin.headers)
    assert neither.status_code == 400 and "algorithm=" in neither.json()["message"]
    register(client, admin, "spleen-tiny", [4, 8, 16])
    add_model(client, admin, "tiny", "spleen-tiny")
    missing = client.post(
        "/api/v1/endpoints/organs/invoke",
        json={"model": "tiny", "inputs": {}},
        headers=caller.headers,
    )
    assert missing.status_code == 400 and "ct" in missing.json()["message"], missing.text
    assert endpoints.cache().loads == 0, "nothing is started for a call that cannot run"
