"""Pipelines: wiring mistakes are refused at build, values flow in topological order, and
each standard operator does its one job (written files are read back and compared)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from tests.dicom.helpers import assert_same_volume, enhanced
from voxelhub.algorithms.pipeline import (
    LabelVolume,
    Operator,
    OperatorError,
    Pipeline,
    PipelineError,
    PortValues,
    Segment,
    SeriesCollection,
    SeriesData,
    SeriesSelectionError,
    Volume,
)
from voxelhub.algorithms.pipeline.operators import (
    DicomSeriesLoader,
    ImageFileLoader,
    Inference,
    JsonWriter,
    Measure,
    MhaWriter,
    PostProcess,
    SeriesRules,
    SeriesSelector,
    SeriesToVolume,
    SeriesWriter,
    Statistics,
)
from voxelhub.dicom.synthetic import BONE, LUNG, ct_phantom, phantom_volume
from voxelhub.dicom.volume import Geometry, series_to_volume

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
GEOMETRY = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
TISSUE = Code("85756007", "SCT", "Tissue")
BONE_CODE = Code("272673000", "SCT", "Bone")
SEGMENTS = (
    Segment(1, "Bone", description="Bone", category=TISSUE, property_type=BONE_CODE),
    Segment(2, "Air", description="Air", category=TISSUE, property_type=BONE_CODE),
)


# Toy operators for wiring: a volume source, a volume → label volume step, sinks.
class MakeVolume(Operator):
    input_ports = {"size": int}
    output_ports = {"volume": Volume}

    def compute(self, inputs: PortValues) -> dict[str, object]:
        size = inputs.get("size", int)
        return {"volume": Volume(np.zeros((size, size, size), np.int16), GEOMETRY)}


class Threshold(Operator):
    input_ports = {"volume": Volume}
    output_ports = {"labels": LabelVolume}

    def compute(self, inputs: PortValues) -> dict[str, object]:
        volume = inputs.get("volume", Volume)
        array = (volume.array > 0).astype(np.uint8)
        return {"labels": LabelVolume(array, volume.geometry, segments=SEGMENTS[:1])}


class NeedsLabels(Operator):
    input_ports = {"labels": LabelVolume, "hint": str}
    output_ports = {"count": int}
    optional_inputs = frozenset({"hint"})

    def compute(self, inputs: PortValues) -> dict[str, object]:
        return {"count": int(inputs.get("labels", LabelVolume).array.sum())}


class Shape(Operator):
    input_ports = {"volume": Volume}
    output_ports = {"shape": tuple}

    def compute(self, inputs: PortValues) -> dict[str, object]:
        return {"shape": inputs.get("volume", Volume).array.shape}


class Liar(Operator):
    input_ports = {"volume": Volume}
    output_ports = {"labels": LabelVolume}

    def compute(self, inputs: PortValues) -> dict[str, object]:
        return {"labels": inputs.get("volume", Volume)}


def _toy() -> tuple[Pipeline, MakeVolume, Threshold, NeedsLabels]:
    pipeline = Pipeline()
    source, threshold, sink = MakeVolume(), Threshold(), NeedsLabels()
    pipeline.input("size", source, "size")
    pipeline.connect(source, "volume", threshold, "volume")
    pipeline.connect(threshold, "labels", sink, "labels")
    pipeline.output("count", sink, "count")
    return pipeline, source, threshold, sink


def _unknown_output_port(p: Pipeline, s: MakeVolume) -> None:
    p.connect(s, "volumes", Shape(), "volume")


def _unknown_input_port(p: Pipeline, s: MakeVolume) -> None:
    p.connect(s, "volume", Shape(), "image")


def _type_mismatch(p: Pipeline, s: MakeVolume) -> None:
    p.connect(s, "volume", NeedsLabels(name="Strict"), "labels")


def _unconnected(p: Pipeline, s: MakeVolume) -> None:
    p.add(Shape(name="Lonely"))


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (_unknown_output_port, ["MakeVolume", "no output port 'volumes'", "volume (Volume)"]),
        (_unknown_input_port, ["Shape", "no input port 'image'", "volume (Volume)"]),
        (
            _type_mismatch,
            ["MakeVolume.volume gives Volume", "Strict.labels takes LabelVolume", "subclass"],
        ),
        (_unconnected, ["Lonely.volume (Volume) is required but not connected"]),
    ],
    ids=["unknown-output", "unknown-input", "type-mismatch", "unconnected"],
)
def test_wiring_mistakes_are_refused_at_build(
    mistake: Callable[[Pipeline, MakeVolume], None], expected: list[str]
) -> None:
    pipeline, source, _threshold, _sink = _toy()
    mistake(pipeline, source)
    with pytest.raises(PipelineError) as raised:
        pipeline.build()
    for text in expected:
        assert text in str(raised.value)


def test_two_sources_on_one_input_are_refused() -> None:
    pipeline, _source, threshold, _sink = _toy()
    pipeline.connect(MakeVolume(name="Other"), "volume", threshold, "volume")
    with pytest.raises(PipelineError) as raised:
        pipeline.build()
    problems = [p for p in raised.value.problems if "sources" in p]
    assert problems == [
        "Threshold.volume has 2 sources (MakeVolume.volume, Other.volume); "
        "an input takes exactly one"
    ]


def test_a_cycle_is_refused_naming_its_operators() -> None:
    pipeline = Pipeline()
    first, second = Threshold(name="First"), Liar(name="Second")
    pipeline.connect(first, "labels", second, "volume")
    pipeline.connect(second, "labels", first, "volume")
    with pytest.raises(PipelineError, match=r"operators Second -> First -> Second form a cycle"):
        pipeline.build()


def test_a_pipeline_input_and_an_edge_on_one_port_are_two_sources() -> None:
    pipeline, source, _threshold, _sink = _toy()
    pipeline.connect(MakeVolume(name="Other"), "volume", Shape(), "volume")
    pipeline.input("size2", source, "size")
    with pytest.raises(PipelineError, match=r"MakeVolume\.size has 2 sources"):
        pipeline.build()


def test_every_problem_is_reported_at_once() -> None:
    pipeline, source, _threshold, _sink = _toy()
    pipeline.connect(source, "nope", Shape(name="A"), "volume")
    pipeline.connect(source, "volume", NeedsLabels(name="B"), "labels")
    pipeline.add(MakeVolume(name="Threshold"))
    with pytest.raises(PipelineError) as raised:
        pipeline.build()
    assert len(raised.value.problems) == 4  # unknown port, mismatch, unconnected, duplicate name
    assert "two operators are named 'Threshold'" in str(raised.value)


def test_inputs_feeding_ports_of_two_types_and_twice_named_outputs_are_refused() -> None:
    pipeline, _source, _threshold, sink = _toy()
    pipeline.input("size", NeedsLabels(name="Other"), "hint")
    pipeline.output("count", sink, "count")
    with pytest.raises(PipelineError) as raised:
        pipeline.build()
    assert (
        "pipeline input 'size' feeds ports of different types: MakeVolume.size (int), "
        "Other.hint (str)"
    ) in str(raised.value)
    assert "two outputs are named 'count'" in str(raised.value)


def test_a_subclass_may_flow_into_its_base_and_optional_inputs_may_stay_open() -> None:
    pipeline, _source, threshold, _sink = _toy()
    shape = Shape()
    pipeline.connect(threshold, "labels", shape, "volume")  # LabelVolume into Volume
    pipeline.output("shape", shape, "shape")
    built = pipeline.build()
    assert built.inputs == {"size": int}
    assert built.run({"size": 3}) == {"count": 0, "shape": (3, 3, 3)}


def test_run_follows_the_flow_not_the_order_added() -> None:
    pipeline = Pipeline()
    sink, threshold, source = NeedsLabels(), Threshold(), MakeVolume()
    pipeline.add(sink)
    pipeline.connect(threshold, "labels", sink, "labels")
    pipeline.connect(source, "volume", threshold, "volume")
    pipeline.input("size", source, "size")
    pipeline.output("count", sink, "count")
    built = pipeline.build()
    assert [op.name for op in built.order] == ["MakeVolume", "Threshold", "NeedsLabels"]
    assert built.run({"size": 2}) == {"count": 0}


def test_run_checks_its_inputs_and_the_operators_outputs() -> None:
    built = _toy()[0].build()
    with pytest.raises(PipelineError, match=r"missing the inputs \['size'\]"):
        built.run({})
    with pytest.raises(PipelineError, match="size is a str, expected int"):
        built.run({"size": "3"})
    pipeline = Pipeline()
    source, liar = MakeVolume(), Liar()
    pipeline.input("size", source, "size")
    pipeline.connect(source, "volume", liar, "volume")
    with pytest.raises(OperatorError, match="output 'labels' is a Volume, declared as LabelVolume"):
        pipeline.build().run({"size": 2})


def _write(series: list[Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ds in series:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return folder


def _threshold(volume: Volume) -> np.ndarray:
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[volume.array >= 300] = 1
    labels[volume.array <= -500] = 2
    return labels


def test_a_full_pipeline_loads_segments_measures_and_writes(tmp_path: Path) -> None:
    folder = _write(ct_phantom(slices=8, size=32), tmp_path / "in" / "ct")
    (folder / "notes.txt").write_text("not DICOM")
    pipeline = Pipeline()
    loader, select = DicomSeriesLoader(), SeriesSelector(SeriesRules(modality="CT"))
    to_volume, infer = SeriesToVolume(), Inference(_threshold, SEGMENTS)
    clean = PostProcess(keep_largest=[1, 2], fill_holes=[1])
    measure, json_writer, mha = Measure(), JsonWriter("volumes"), MhaWriter("labels")
    pipeline.input("folder", loader, "folder")
    pipeline.connect(loader, "series", select, "series")
    pipeline.connect(select, "series", to_volume, "series")
    pipeline.connect(to_volume, "volume", infer, "volume")
    pipeline.connect(infer, "labels", clean, "labels")
    pipeline.connect(clean, "labels", measure, "labels")
    pipeline.connect(measure, "measurements", json_writer, "value")
    pipeline.connect(clean, "labels", mha, "volume")
    for writer in (json_writer, mha):
        pipeline.input("output_dir", writer, "output_dir")
    pipeline.output("labels", clean, "labels")
    pipeline.output("series", loader, "series")
    out = tmp_path / "out"
    result = pipeline.build().run({"folder": folder, "output_dir": out})

    collection = result["series"]
    assert isinstance(collection, SeriesCollection)
    assert [s.path for s in collection.skipped] == ["notes.txt"]
    labels = result["labels"]
    assert isinstance(labels, LabelVolume)
    assert np.array_equal(labels.array == 1, phantom_volume(8, 32) == BONE)
    written = SimpleITK.ReadImage(str(out / "labels.mha"))
    assert np.array_equal(SimpleITK.GetArrayFromImage(written), labels.array)
    assert written.GetSpacing() == pytest.approx((1.5, 1.5, 2.5))  # type: ignore[no-untyped-call]
    volumes = (out / "volumes.json").read_text()
    assert '"name": "Bone"' in volumes
    assert f'"voxels": {int((labels.array == 1).sum())}' in volumes


def _series(modality: str, description: str, *, body_part: str, count: int) -> SeriesData:
    series = ct_phantom(slices=count, size=4)
    for ds in series:
        ds.Modality, ds.SeriesDescription, ds.BodyPartExamined = modality, description, body_part
    return SeriesData.of(series)


CANDIDATES = SeriesCollection(
    (
        _series("CT", "Chest 1.0 B30f", body_part="CHEST", count=3),
        _series("CT", "Chest 5.0 B30f", body_part="CHEST", count=2),
        _series("MR", "T1 MPRAGE", body_part="HEAD", count=4),
        _series("CT", "Topogram", body_part="CHEST", count=1),
    )
)


@pytest.mark.parametrize(
    ("rules", "description"),
    [
        (SeriesRules(), "T1 MPRAGE"),  # the most instances
        (SeriesRules(modality="ct"), "Chest 1.0 B30f"),
        (SeriesRules(modality="CT", description=r"5\.0"), "Chest 5.0 B30f"),
        (SeriesRules(body_part="head"), "T1 MPRAGE"),
        (SeriesRules(description="^topo", min_instances=1), "Topogram"),
        (SeriesRules(modality="CT", min_instances=3), "Chest 1.0 B30f"),
    ],
)
def test_the_selector_applies_its_rules(rules: SeriesRules, description: str) -> None:
    selected = SeriesSelector(rules).compute(PortValues("selector", {"series": CANDIDATES}))
    assert isinstance(selected["series"], SeriesData)
    assert selected["series"].series_description == description


def test_the_selector_lists_what_was_there_when_nothing_matches() -> None:
    selector = SeriesSelector(SeriesRules(modality="CT", body_part="HEAD", min_instances=2))
    with pytest.raises(SeriesSelectionError) as raised:
        selector.compute(PortValues("selector", {"series": CANDIDATES}))
    message = str(raised.value)
    assert "no series has modality CT, body part HEAD, at least 2 instances" in message
    assert "MR 'T1 MPRAGE' body part HEAD, 4 instances" in message
    assert "modality is MR" in message
    assert "'Topogram' body part CHEST, 1 instances" in message
    assert "only 1 instances" in message


def test_a_bad_rule_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        SeriesRules(description="(")


def test_series_writer_output_reads_back_as_a_consistent_series(tmp_path: Path) -> None:
    source = ct_phantom(slices=6, size=16)
    array, geometry = series_to_volume(source)
    volume = SeriesToVolume().compute(PortValues("v", {"series": SeriesData.of(source[::-1])}))
    written = SeriesWriter("derived").compute(
        PortValues("w", {"volume": volume["volume"], "output_dir": tmp_path})
    )
    folder = written["path"]
    assert folder == tmp_path / "derived"
    series = [dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    assert len(series) == 6
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    assert series[0].SeriesInstanceUID != source[0].SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in series}) == 6
    assert {ds.SOPInstanceUID for ds in series}.isdisjoint({ds.SOPInstanceUID for ds in source})
    for ds in series:
        assert ds.StudyInstanceUID == source[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == source[0].FrameOfReferenceUID
        assert ds.PatientID == source[0].PatientID
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert [int(ds.InstanceNumber) for ds in series] == [1, 2, 3, 4, 5, 6]
    referenced = [ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in series]
    assert referenced == [ds.SOPInstanceUID for ds in source]  # slice k from source slice k
    assert_same_volume(series_to_volume(series), (array, geometry))


def test_an_enhanced_image_becomes_a_volume_that_keeps_its_series() -> None:
    """Its slices are frames of one instance: writers reference them by frame number."""
    source = ct_phantom(slices=4, size=8)
    series = SeriesData.of([enhanced(source)])
    volume = SeriesToVolume().compute(PortValues("v", {"series": series}))["volume"]
    assert isinstance(volume, Volume)
    assert np.array_equal(volume.array, phantom_volume(4, 8))
    assert volume.geometry == series_to_volume(source)[1]
    assert volume.series is not None and volume.series.datasets == series.datasets


def test_series_writer_rescales_real_values(tmp_path: Path) -> None:
    source = ct_phantom(slices=3, size=8)
    _, geometry = series_to_volume(source)
    values = np.linspace(-3.5, 2.25, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    volume = Volume(values, geometry, series=SeriesData.of(source))
    SeriesWriter("float").compute(PortValues("w", {"volume": volume, "output_dir": tmp_path}))
    again, _ = series_to_volume([dcmread(p) for p in (tmp_path / "float").glob("*.dcm")])
    assert np.allclose(again, values, atol=1e-3)


def test_writers_that_need_a_source_series_say_so(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 2, 2), np.int16), GEOMETRY)
    with pytest.raises(OperatorError, match="write it with MhaWriter instead"):
        SeriesWriter("x").compute(PortValues("w", {"volume": volume, "output_dir": tmp_path}))


def test_post_process_keeps_the_largest_component_and_fills_holes() -> None:
    array = np.zeros((2, 9, 9), np.uint8)
    array[:, 1:6, 1:6] = 1
    array[:, 3, 3] = 2  # a hole in label 1, filled by it
    array[:, 8, 8] = 1  # a speck, removed
    labels = LabelVolume(array, GEOMETRY, segments=SEGMENTS)
    cleaned = PostProcess(keep_largest=[1], fill_holes=[1]).compute(
        PortValues("p", {"labels": labels})
    )["labels"]
    assert isinstance(cleaned, LabelVolume)
    expected = np.zeros_like(array)
    expected[:, 1:6, 1:6] = 1
    assert np.array_equal(cleaned.array, expected)
    assert cleaned.segments == labels.segments


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda v: np.zeros((1, 1, 1), np.uint8), "returned shape"),
        (lambda v: np.full(v.array.shape, 7, np.uint8), r"labels \[7\] that no segment"),
        (lambda v: np.zeros(v.array.shape, np.float32), "not integers"),
    ],
)
def test_inference_checks_what_the_model_returns(model: object, message: str) -> None:
    volume = Volume(np.zeros((2, 3, 3), np.int16), GEOMETRY)
    with pytest.raises(OperatorError, match=message):
        Inference(model, SEGMENTS).compute(PortValues("i", {"volume": volume}))  # type: ignore[arg-type]


def test_image_files_load_with_their_geometry(tmp_path: Path) -> None:
    hu = phantom_volume(4, 16)
    MhaWriter("ct").compute(
        PortValues("w", {"volume": Volume(hu, GEOMETRY), "output_dir": tmp_path})
    )
    loaded = ImageFileLoader().compute(PortValues("l", {"path": tmp_path / "ct.mha"}))["volume"]
    assert isinstance(loaded, Volume)
    assert np.array_equal(loaded.array, hu)
    assert loaded.geometry == GEOMETRY
    plane_image = SimpleITK.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    SimpleITK.WriteImage(plane_image, str(tmp_path / "plane.tif"))
    plane = ImageFileLoader().compute(PortValues("l", {"path": tmp_path / "plane.tif"}))["volume"]
    assert isinstance(plane, Volume)
    assert plane.array.shape == (1, 3, 4)
    stats = Statistics().compute(PortValues("s", {"volume": plane}))["statistics"]
    assert isinstance(stats, dict)
    assert (stats["shape"], stats["min"], stats["max"]) == ([1, 3, 4], 0.0, 11.0)


def test_loader_groups_series_and_explains_an_empty_folder(tmp_path: Path) -> None:
    _write(ct_phantom(slices=2, size=4), tmp_path / "a")
    _write(ct_phantom(slices=3, size=4), tmp_path / "a" / "nested")
    found = DicomSeriesLoader().compute(PortValues("l", {"folder": tmp_path / "a"}))["series"]
    assert isinstance(found, SeriesCollection)
    assert sorted(s.number_of_instances for s in found.series) == [2, 3]
    for series in found.series:
        assert [int(ds.InstanceNumber) for ds in series.datasets] == list(
            range(1, series.number_of_instances + 1)
        )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.dcm").write_bytes(b"nope" * 100)
    empty = r"no DICOM series in .*\(1 files could not be used: x\.dcm: This is not"
    with pytest.raises(OperatorError, match=empty):
        DicomSeriesLoader().compute(PortValues("l", {"folder": tmp_path / "b"}))


def test_lung_values_are_what_the_phantom_says() -> None:
    # Guards the thresholds used above against a change of the phantom.
    assert LUNG <= -500 < 300 <= BONE
