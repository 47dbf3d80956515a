"""Each study's QIDO-RS result as DICOM JSON text, kept by PostgreSQL as the row changes.

The text is two generated columns of `dicom_studies`: the elements before RetrieveURL
(00081190) and those after it, since the URL depends on the address the search came to.
Values are rendered as `attributes.element` renders them: empty values carry no "Value",
person names are their component groups ({"Alphabetic": …, "Ideographic": …}),
ModalitiesInStudy is sorted, keys come in tag order.
"""

from __future__ import annotations

from voxelhub.store.attributes import STUDY_TAGS

RETRIEVE_URL = "00081190"
# SQL functions created by migrations 0006 and 0008: JSON text of a string, of a sorted
# string array, of a person name's component groups.
JSON_STRING = "vxh_json_string"
JSON_SORTED = "vxh_json_sorted"
JSON_NAME = "vxh_json_name"
FUNCTIONS = (
    f"""CREATE OR REPLACE FUNCTION {JSON_STRING}(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN to_json(value)::text""",
    f"""CREATE OR REPLACE FUNCTION {JSON_SORTED}(value text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT to_json(array_agg(m ORDER BY m COLLATE "C"))::text FROM unnest(value) AS m)""",
    f"""CREATE OR REPLACE FUNCTION {JSON_NAME}(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN '{{' || concat_ws(',',
CASE WHEN split_part(value, '=', 1) <> ''
THEN '"Alphabetic":' || {JSON_STRING}(split_part(value, '=', 1)) END,
CASE WHEN split_part(value, '=', 2) <> ''
THEN '"Ideographic":' || {JSON_STRING}(split_part(value, '=', 2)) END,
CASE WHEN split_part(value, '=', 3) <> ''
THEN '"Phonetic":' || {JSON_STRING}(split_part(value, '=', 3)) END) || '}}'""",
)


def _string(tag: str, vr: str, column: str) -> str:
    function = JSON_NAME if vr == "PN" else JSON_STRING
    return (
        f"""CASE WHEN {column} = '' THEN '"{tag}":{{"vr":"{vr}"}}'\n"""
        f"""ELSE '"{tag}":{{"vr":"{vr}","Value":['\n"""
        f"""|| {function}({column})\n"""
        """|| ']}' END"""
    )


def _elements() -> dict[str, str]:
    elements = {tag: _string(tag, vr, column) for tag, (_, vr, column) in STUDY_TAGS.items()}
    elements["00080056"] = """'"00080056":{"vr":"CS","Value":["ONLINE"]}'"""
    elements["00080061"] = (
        """CASE WHEN cardinality(modalities) = 0 THEN '"00080061":{"vr":"CS"}'\n"""
        """ELSE '"00080061":{"vr":"CS","Value":'\n"""
        f"""|| {JSON_SORTED}(modalities::text[]) || '}}' END"""
    )
    for tag, column in (("00201206", "number_of_series"), ("00201208", "number_of_instances")):
        elements[tag] = f"""'"{tag}":{{"vr":"IS","Value":[' || {column}::text || ']}}'"""
    return elements


def _joined(tags: list[str], elements: dict[str, str]) -> str:
    return "\n|| ',' || ".join(f"({elements[tag]})" for tag in tags)


def document_sql() -> tuple[str, str]:
    """The generated columns' expressions: the elements before RetrieveURL, those after."""
    elements = _elements()
    tags = sorted(elements)
    head = [tag for tag in tags if tag < RETRIEVE_URL]
    tail = [tag for tag in tags if tag > RETRIEVE_URL]
    return _joined(head, elements), _joined(tail, elements)


HEAD_SQL, TAIL_SQL = document_sql()
KEYS = frozenset(_elements()) | {RETRIEVE_URL}
