"""Scalar outputs stored with the end of their job in one round trip to the database.

A run whose declared outputs are all scalars (numbers, text, reports, JSON) needs no
object store and no session: its values are read from /output before anything is sent,
and written as case values by the statements of `engine.finish_now`, in the transaction
that records the end. They replace a case's values as `values_service` does: the case's
writers take turns on its row, a replaced value's row goes (its objects after the commit),
and the case counts as updated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from voxelhub.algorithms.io import read_scalar
from voxelhub.archives.values import FILE_KINDS, ValueKind
from voxelhub.archives.values_service import check_interface
from voxelhub.core.objects import ObjectStore
from voxelhub.jobs.engine import FINISHED_HERE, Writes

_LOCK_CASE_SQL = "SELECT 1 FROM cases WHERE id = %(case_id)s FOR UPDATE"
_DROP_SQL = (
    "DELETE FROM case_values WHERE case_id = %(case_id)s AND interface = ANY(%(targets)s) "
    f"AND {FINISHED_HERE} RETURNING object_keys"
)
_ADD_SQL = (
    "INSERT INTO case_values "
    "(id, case_id, interface, kind, value, object_keys, size_bytes, created_at) "
    "SELECT %(value_id)s, %(case_id)s, %(target)s, %(kind)s, %(value)s, '[]', 0, %(now)s "
    f"WHERE {FINISHED_HERE}"
)
_TOUCH_SQL = f"UPDATE cases SET updated_at = %(now)s WHERE id = %(case_id)s AND {FINISHED_HERE}"


def all_scalar(outputs: list[dict[str, Any]]) -> bool:
    return all(ValueKind(spec["kind"]) not in FILE_KINDS for spec in outputs)


@dataclass(frozen=True)
class ScalarOutput:
    """A scalar output read from /output: the body of its new case value, and where it goes."""

    value_id: uuid.UUID
    interface: str
    target: str
    body: dict[str, Any]


def read_outputs(
    output_dir: Path, *, algorithm: str, outputs: list[dict[str, Any]]
) -> list[ScalarOutput]:
    """Every declared scalar output; OutputError if one is missing or not of its kind
    (then nothing is stored)."""
    read = []
    for spec in outputs:
        interface, kind = spec["interface"], ValueKind(spec["kind"])
        body = read_scalar(output_dir, interface=interface, kind=kind)
        target = check_interface(f"{algorithm}.{interface}")
        read.append(ScalarOutput(uuid.uuid4(), interface, target, body))
    return read


def collected(read: list[ScalarOutput]) -> dict[str, Any]:
    """The job's `outputs` record of the values `writes` stores (as `io.collect` says)."""
    return {
        out.interface: {
            "case_value": str(out.value_id),
            "interface": out.target,
            "kind": str(out.body["kind"]),
        }
        for out in read
    }


def writes(store: ObjectStore, case_id: uuid.UUID, read: list[ScalarOutput]) -> Writes:
    """The statements that store `read` as values of the case with the job's end."""

    def send(
        conn: psycopg.Connection[Any], params: dict[str, Any], send_finish: Callable[[], None]
    ) -> Callable[[], None]:
        ours = {**params, "case_id": case_id}
        conn.execute(_LOCK_CASE_SQL, ours)
        send_finish()
        dropped = conn.execute(_DROP_SQL, {**ours, "targets": [out.target for out in read]})
        for out in read:
            value = {"value_id": out.value_id, "target": out.target, "kind": str(out.body["kind"])}
            conn.execute(_ADD_SQL, {**ours, **value, "value": Jsonb(out.body)})
        conn.execute(_TOUCH_SQL, ours)

        def remove_replaced() -> None:
            for (keys,) in dropped.fetchall():
                for key in keys or ():
                    store.delete(key)

        return remove_replaced

    return send
