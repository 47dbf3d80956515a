"""The viewer API over STOWed synthetic series: studies, rendering, labels, ROI, permissions."""

from __future__ import annotations

import time
import uuid
from typing import Any

import highdicom as hd
import imagecodecs
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from sqlalchemy import select

from tests.conftest import Account, stow
from tests.viewer import helpers as tilted
from voxelhub.archives import service as archives
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.synthetic import (
    AIR,
    BONE,
    RESCALE_INTERCEPT,
    PatientInfo,
    ct_phantom,
    phantom_volume,
)
from voxelhub.store.models import Instance, Series
from voxelhub.viewer.render.display import output_grid

SLICES, SIZE, PIXEL_MM, SLICE_MM = 8, 32, 1.5, 2.5
API = "/viewer/api"


def make_archive(database_url: str, owner: Account) -> str:
    principal = Principal(user_id=owner.id, username=owner.username, is_admin=False, via="token")
    with session_scope(database_url) as db:
        return str(archives.create_archive(db, principal, f"Viewer-{uuid.uuid4().hex[:6]}").id)


def windowed(hu: npt.NDArray[Any], center: float = 40, width: float = 400) -> npt.NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2 linear window, written out independently of the render core."""
    scaled = ((hu.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(scaled, 0, 255).astype(np.uint8)


def image(response: Any) -> npt.NDArray[Any]:
    assert response.status_code == 200, response.text
    return np.asarray(imagecodecs.imread(response.content))


def make_seg(datasets: list[Dataset]) -> Dataset:
    """A two-segment SEG: 1 = body slices 2..4 (a box), 2 = the phantom's lesion (HU 60)."""
    volume = phantom_volume(SLICES, SIZE)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[2:5, 8:20, 6:12] = 1
    labels[volume == 60] = 2
    tissue = Code("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=tissue,
            segmented_property_type=Code(code, "SCT", label),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label, code in ((1, "Box", "91747007"), (2, "Lesion", "108369006"))
    ]
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxelhub",
        manufacturer_model_name="tests",
        software_versions="1",
        device_serial_number="1",
    )


@pytest.fixture
def stored(client: TestClient, database_url: str, make_user) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    owner = make_user()
    archive = make_archive(database_url, owner)
    ct = ct_phantom(SLICES, SIZE, spacing_mm=PIXEL_MM, slice_thickness_mm=SLICE_MM)
    gappy = ct_phantom(5, SIZE, patient=PatientInfo(patient_id="GAP-1", patient_name="Gap^Series"))
    del gappy[2]  # a missing slice: no volume
    seg = make_seg(ct)
    stow(client, owner, archive, [*ct[::-1], seg])  # slices arrive in any order
    stow(client, owner, archive, gappy)
    return {
        "owner": owner,
        "archive": archive,
        "study": ct[0].StudyInstanceUID,
        "ct": ct[0].SeriesInstanceUID,
        "frame": ct[0].FrameOfReferenceUID,
        "seg": seg.SeriesInstanceUID,
        "gappy": gappy[0].SeriesInstanceUID,
        "gappy_study": gappy[0].StudyInstanceUID,
    }


def test_study_list_and_study_document(client: TestClient, stored: dict[str, Any]) -> None:
    headers = stored["owner"].headers
    listed = client.get(f"{API}/studies", params={"patient": "demo^PH"}, headers=headers).json()
    assert listed["total"] == 1
    study = listed["studies"][0]
    assert study["study_instance_uid"] == stored["study"]
    assert study["archive_id"] == stored["archive"] and study["number_of_series"] == 2
    assert (
        client.get(f"{API}/studies", params={"modality": "MR"}, headers=headers).json()["total"]
        == 0
    )
    for bad, words in (
        ({"date_from": "2024-01-01"}, "YYYYMMDD"),
        ({"limit": 0}, "limit=0 is out of range"),
        ({"archive": "imaging"}, "archive id"),
    ):
        refused = client.get(f"{API}/studies", params=bad, headers=headers)
        assert refused.status_code == 400 and words in refused.json()["detail"]
    both = client.get(f"{API}/studies", params={"archive": stored["archive"]}, headers=headers)
    assert both.json()["total"] == 2

    document = client.get(f"{API}/studies/{stored['study']}", headers=headers).json()
    series = {s["series_instance_uid"]: s for s in document["series"]}
    ct, seg = series[stored["ct"]], series[stored["seg"]]
    assert ct["kind"] == "image" and ct["volume"]["valid"] and ct["volume"]["reason"] is None
    assert ct["volume"]["dims"] == [SLICES, SIZE, SIZE]
    assert ct["volume"]["spacing"] == pytest.approx([SLICE_MM, PIXEL_MM, PIXEL_MM])
    assert ct["volume"]["orientation_labels"]["coronal"] == {
        "top": "S",
        "bottom": "I",
        "left": "R",
        "right": "L",
    }
    # Where its images lie in the patient (for linked cross-hairs): a plain axial stack.
    assert ct["volume"]["grid"] == {
        "origin": pytest.approx([-PIXEL_MM * SIZE / 2, -PIXEL_MM * SIZE / 2, 0.0]),
        "steps_mm": [[0.0, 0.0, SLICE_MM], [0.0, PIXEL_MM, 0.0], [PIXEL_MM, 0.0, 0.0]],
        "slice_size": [SIZE, SIZE],
        "slice_offsets": None,
        "flipped": True,
    }
    assert ct["window"] == {"center": 40.0, "width": 400.0}
    assert ct["overlay_text"]["patient_name"] == "Demo^Phantom"
    assert seg["kind"] == "seg" and seg["referenced_series_uid"] == stored["ct"]
    # Series of one frame of reference can be linked: the SEG shares the CT's.
    assert ct["frame_of_reference_uid"] == seg["frame_of_reference_uid"] == stored["frame"]
    assert [(s["number"], s["label"]) for s in seg["segments"]] == [(1, "Box"), (2, "Lesion")]

    gappy = client.get(f"{API}/studies/{stored['gappy_study']}", headers=headers).json()
    volume = gappy["series"][0]["volume"]
    assert not volume["valid"] and "not evenly spaced" in volume["reason"]
    assert volume["grid"] is None


def test_axial_reformatted_and_projected_images(client: TestClient, stored: dict[str, Any]) -> None:
    headers, url = stored["owner"].headers, f"{API}/series/{stored['ct']}/render"
    hu = phantom_volume(SLICES, SIZE)

    axial = client.get(url, params={"plane": "axial", "index": 3, "size": SIZE}, headers=headers)
    assert np.array_equal(image(axial), windowed(hu[3]))
    assert axial.headers["x-plane-size"] == str(SLICES) and axial.headers["x-index"] == "3"
    assert float(axial.headers["x-pixel-spacing"]) == PIXEL_MM
    assert axial.headers["cache-control"].startswith("private")

    # Coronal at 64 px: 20 mm high, 48 mm wide at 0.75 mm per pixel, head (last slice) on top.
    coronal = client.get(url, params={"plane": "coronal", "index": 16, "size": 64}, headers=headers)
    rows = np.floor((np.arange(27) + 0.5) * 0.75 / SLICE_MM).astype(int)
    cols = np.floor((np.arange(64) + 0.5) * 0.75 / PIXEL_MM).astype(int)
    expected = windowed(hu[SLICES - 1 - rows][:, 16, :][:, cols])
    assert np.array_equal(image(coronal), expected)
    assert coronal.headers["x-plane-size"] == str(SIZE)
    assert float(coronal.headers["x-pixel-spacing"]) == 0.75

    mip = client.get(
        url,
        headers=headers,
        params={"index": 3, "mode": "mip", "slab": 7.5, "size": SIZE, "wc": 0, "ww": 2000},
    )
    assert np.array_equal(image(mip), windowed(hu[2:5].max(axis=0), 0, 2000))
    inverted = client.get(url, params={"index": 3, "size": SIZE, "invert": 1}, headers=headers)
    assert np.array_equal(image(inverted), 255 - windowed(hu[3]))
    for image_format in ("jpeg", "webp"):
        other = client.get(url, params={"index": 0, "format": image_format}, headers=headers)
        assert other.headers["content-type"] == f"image/{image_format}"
        assert image(other).shape[:2] == (512, 512)  # the default size


def test_load_status_cache_roi_and_value(client: TestClient, stored: dict[str, Any]) -> None:
    headers, series = stored["owner"].headers, f"{API}/series/{stored['ct']}"
    loaded = client.post(f"{series}/load", headers=headers)
    assert loaded.status_code == 202 and loaded.json()["state"] in ("loading", "ready")
    deadline = time.monotonic() + 30
    while (status := client.get(f"{series}/status", headers=headers).json())["state"] != "ready":
        assert status["state"] == "loading" and time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["loaded"] == status["total"] == SLICES
    usage = client.get(f"{API}/cache", headers=headers).json()
    assert usage["used_bytes"] == SLICES * SIZE * SIZE * 2 and usage["ready"] == 1
    assert usage["used_bytes"] <= usage["budget_bytes"]

    hu = phantom_volume(SLICES, SIZE)
    value = client.get(
        f"{series}/value", params={"index": 4, "x": 5, "y": 16, "size": SIZE}, headers=headers
    ).json()
    assert value["value"] == float(hu[4, 16, 5]) and value["unit"] == "HU"
    origin = -PIXEL_MM * SIZE / 2
    assert value["position_mm"] == pytest.approx(
        [origin + 5 * PIXEL_MM, origin + 16 * PIXEL_MM, 4 * SLICE_MM]
    )
    roi = client.get(
        f"{series}/roi",
        headers=headers,
        params={"index": 4, "x0": 4, "y0": 10, "x1": 9, "y1": 13, "size": SIZE},
    ).json()
    region = hu[4, 10:14, 4:10].astype(np.float64)
    assert roi["n"] == region.size and roi["mean"] == pytest.approx(region.mean())
    assert (roi["min"], roi["max"]) == (region.min(), region.max())
    assert roi["area_mm2"] == pytest.approx(region.size * PIXEL_MM**2) and roi["unit"] == "HU"


def test_seg_labels_lie_on_the_render_grid(client: TestClient, stored: dict[str, Any]) -> None:
    headers = stored["owner"].headers
    hu = phantom_volume(SLICES, SIZE)
    for params in (
        {"plane": "axial", "index": 3, "size": 48},
        {"plane": "sagittal", "index": 7, "size": 40},
    ):
        rendered = client.get(f"{API}/series/{stored['ct']}/render", params=params, headers=headers)
        labelled = client.get(
            f"{API}/series/{stored['seg']}/labels",
            headers=headers,
            params={**params, "source": stored["ct"]},
        )
        labels = image(labelled)
        assert labels.dtype == np.uint8 and labels.ndim == 2
        assert labels.shape == image(rendered).shape[:2]
        for name in ("x-pixel-spacing", "x-plane-size", "x-index"):
            assert labelled.headers[name] == rendered.headers[name]
    axial = image(
        client.get(
            f"{API}/series/{stored['seg']}/labels",
            headers=headers,
            params={"index": 3, "size": SIZE},  # source: the series the SEG references
        )
    )
    expected = np.zeros((SIZE, SIZE), dtype=np.uint8)
    expected[8:20, 6:12] = 1
    expected[hu[3] == 60] = 2
    assert np.array_equal(axial, expected)
    assert (axial == 2).any()


def test_series_without_a_volume_show_image_by_image(
    client: TestClient, stored: dict[str, Any]
) -> None:
    headers, url = stored["owner"].headers, f"{API}/series/{stored['gappy']}/render"
    first = client.get(url, params={"index": 3, "size": SIZE}, headers=headers)
    assert image(first).shape == (SIZE, SIZE) and first.headers["x-plane-size"] == "4"
    refused = client.get(url, params={"plane": "coronal", "index": 0}, headers=headers)
    assert refused.status_code == 409 and "not evenly spaced" in refused.json()["detail"]
    status = client.post(f"{API}/series/{stored['gappy']}/load", headers=headers).json()
    assert status["state"] == "ready" and status["volume"] is False


RENDER_CASES = [
    ({"plane": "oblique"}, 400, "plane must be one of axial|coronal|sagittal"),
    ({"index": "three"}, 400, "index must be a whole number"),
    ({"index": -1}, 400, "out of range"),
    ({"index": SLICES}, 400, f"use 0..{SLICES - 1}"),
    ({"plane": "coronal", "index": SIZE}, 400, f"use 0..{SIZE - 1}"),
    ({"size": 0}, 400, "size"),
    ({"size": 4096}, 400, "size"),
    ({"ww": 0}, 400, "window width"),
    ({"wc": "nan"}, 400, "finite"),
    ({"mode": "max"}, 400, "mode must be one of"),
    ({"slab": -5}, 400, "slab"),
    ({"format": "gif"}, 400, "format must be one of png|jpeg|webp"),
    ({"invert": "yes"}, 400, "invert must be 0 or 1"),
]
OTHER_CASES = [
    ("seg/render", {}, 409, "SEG series"),
    ("ct/labels", {"source": "x"}, 409, "not a SEG"),
    ("seg/labels", {"source": "1.2.3"}, 400, "use source="),
    ("ct/roi", {"x0": 0, "y0": 0, "x1": 600, "y1": 2}, 400, "leaves"),
    ("ct/roi", {"x0": 0, "y0": 0, "x1": 2}, 400, "y1 is required"),
    ("ct/roi", {"x0": 0, "y0": 0, "x1": 2, "y1": 2, "shape": "star"}, 400, "rect|ellipse"),
    ("ct/value", {"x": 512, "y": 0}, 400, "outside"),
    ("nope/render", {}, 404, "no series"),
]


def test_bad_requests_get_a_clear_4xx(client: TestClient, stored: dict[str, Any]) -> None:
    """One stored study, every bad request in turn (a table, not one database per row)."""
    cases = [("ct/render", query, status, words) for query, status, words in RENDER_CASES]
    problems = []
    for path, query, status, words in cases + OTHER_CASES:
        name, endpoint = path.split("/")
        uid = stored.get(name, "1.2.3.4.5")
        response = client.get(
            f"{API}/series/{uid}/{endpoint}",
            params={"index": 0, **query},
            headers=stored["owner"].headers,
        )
        body = response.json()
        if response.status_code != status or words not in str(body.get("detail")):
            problems.append((path, query, response.status_code, body))
    assert problems == []


def test_other_users_see_nothing(client: TestClient, stored: dict[str, Any], make_user) -> None:  # type: ignore[no-untyped-def]
    stranger = make_user().headers
    assert client.get(f"{API}/studies", headers=stranger).json()["total"] == 0
    assert client.get(f"{API}/studies/{stored['study']}", headers=stranger).status_code == 404
    for method, endpoint in (
        ("get", "render"),
        ("get", "status"),
        ("post", "load"),
        ("get", "roi"),
    ):
        response = client.request(
            method, f"{API}/series/{stored['ct']}/{endpoint}", params={"index": 0}, headers=stranger
        )
        assert response.status_code == 404, (endpoint, response.text)
    assert client.get(f"{API}/studies").status_code == 401


def test_slices_with_their_own_rescale_and_monochrome1(
    client: TestClient, database_url: str, make_user
) -> None:  # type: ignore[no-untyped-def]
    """Rescale differs per slice (the volume holds real values) and low values show white."""
    owner = make_user()
    slices, size = 6, 16
    series = ct_phantom(slices, size, spacing_mm=2.0, slice_thickness_mm=2.0)
    hu = phantom_volume(slices, size)
    for k, ds in enumerate(series):
        ds.PhotometricInterpretation = "MONOCHROME1"
        if k % 2:
            ds.RescaleIntercept = -2048
            ds.PixelData = (hu[k].astype(np.int32) + 2048).astype(np.uint16).tobytes()
    stow(client, owner, make_archive(database_url, owner), series)
    url = f"{API}/series/{series[0].SeriesInstanceUID}"
    coronal = client.get(
        f"{url}/render",
        params={"plane": "coronal", "index": 8, "size": size},
        headers=owner.headers,
    )
    # 12 mm high, 32 mm wide at 2 mm per pixel: 6 rows, one per slice, head up.
    assert np.array_equal(image(coronal), 255 - windowed(hu[::-1, 8, :]))
    for k in (2, 3):
        value = client.get(
            f"{url}/value", params={"index": k, "x": 7, "y": 9, "size": size}, headers=owner.headers
        ).json()
        assert value["value"] == float(hu[k, 9, 7])


def test_a_gantry_tilted_series_is_reformatted_in_its_true_shape(
    client: TestClient, database_url: str, make_user
) -> None:  # type: ignore[no-untyped-def]
    """A sagittal image through a ball imaged by a tilted gantry shows it round and where
    it lies; axial images are the slices as acquired."""
    owner, series = make_user(), tilted.tilted_ball()
    stow(client, owner, make_archive(database_url, owner), series[::-1])
    headers, url = owner.headers, f"{API}/series/{series[0].SeriesInstanceUID}"
    study = client.get(f"{API}/studies/{series[0].StudyInstanceUID}", headers=headers).json()
    volume = study["series"][0]["volume"]
    assert volume["valid"] and volume["dims"] == [tilted.SLICES, tilted.GRID_ROWS, tilted.SIZE]
    assert volume["gantry_tilt_degrees"] == pytest.approx(tilted.DEGREES)
    # The grid the reformats are cut from, where the tests' own grid lies; slice k starts
    # k * 2.5 mm * sin(20°) = 0.86 k rows along it.
    grid = volume["grid"]
    voxel = np.array([7, 20, 17])
    point = np.array(grid["origin"]) + voxel @ np.array(grid["steps_mm"])
    assert point.tolist() == pytest.approx(tilted.grid_position(*voxel).tolist())
    assert grid["slice_size"] == [tilted.SIZE, tilted.SIZE] and grid["flipped"] is True
    shift = tilted.TABLE_MM * np.sin(np.radians(tilted.DEGREES))
    assert np.allclose(grid["slice_offsets"], [[k * shift, 0.0] for k in range(tilted.SLICES)])

    # Bone white, air black; one output pixel per millimetre.
    shown = {"wc": (AIR + BONE) / 2, "ww": 2, "size": tilted.GRID_ROWS}
    params = {"plane": "sagittal", "index": tilted.CENTRE_COLUMN, **shown}
    sagittal = client.get(f"{url}/render", params=params, headers=headers)
    pixels = image(sagittal)
    assert sagittal.headers["x-plane-size"] == str(tilted.SIZE)
    grid = output_grid((tilted.SLICES, tilted.GRID_ROWS), (tilted.SLICE_MM, 1.0), tilted.GRID_ROWS)
    assert pixels.shape == grid.shape
    # Head up: image row y shows slice 12 - y; image column x shows row x of the grid.
    rows, columns = np.meshgrid(grid.rows, grid.cols, indexing="ij")
    positions = tilted.grid_position(tilted.SLICES - 1 - rows, columns, tilted.CENTRE_COLUMN)
    tilted.assert_shows_the_ball(np.where(pixels > 127, BONE, AIR), positions, reach=np.sqrt(2))
    # The value under the pixel nearest the ball's centre, and where that pixel lies.
    nearest = np.linalg.norm(positions - np.array(tilted.CENTRE), axis=-1).argmin()
    y, x = np.unravel_index(nearest, pixels.shape)
    value = client.get(f"{url}/value", params={**params, "x": x, "y": y}, headers=headers).json()
    assert value["value"] == BONE
    assert value["position_mm"] == pytest.approx(positions[y, x].tolist())
    coronal = client.get(f"{url}/render", params={**params, "plane": "coronal", "index": 20},
                         headers=headers)  # fmt: skip
    assert coronal.headers["x-plane-size"] == str(tilted.GRID_ROWS)

    for k in (0, 6):
        axial = client.get(
            f"{url}/render", params={"index": k, "size": tilted.SIZE}, headers=headers
        )
        assert np.array_equal(
            image(axial), windowed(series[k].pixel_array.astype(np.int32) + RESCALE_INTERCEPT)
        )


def test_a_damaged_stored_frame_is_a_clear_4xx(
    client: TestClient, stored: dict[str, Any], runtime: Runtime
) -> None:
    """Damaged data behind a valid request: 422 naming the instance, never a 500."""
    with session_scope(runtime.database_url) as db:
        series = db.scalars(
            select(Series).where(Series.series_instance_uid == stored["gappy"])
        ).one()
        first = db.scalars(
            select(Instance).where(Instance.series_id == series.id).order_by(Instance.id)
        ).first()
        assert first is not None
        key, header, uid = first.object_key, first.header_length, first.sop_instance_uid
    path = runtime.store.path_of(key)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[header:] = b"\x5a" * (len(data) - header)
    path.write_bytes(bytes(data))

    url = f"{API}/series/{stored['gappy']}/render"
    headers = stored["owner"].headers
    shown = [client.get(url, params={"index": i}, headers=headers) for i in range(4)]
    damaged = [r for r in shown if r.status_code != 200]
    assert len(damaged) == 1, [r.status_code for r in shown]
    assert damaged[0].status_code == 422 and uid in damaged[0].json()["detail"]
