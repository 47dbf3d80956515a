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

from voxelhub.algorithms.io import read_scalar
from voxelhub.archives.values import FILE_KINDS, ValueKind
from voxelhub.archives.values_service import check_interface
from voxelhub.core.db import json_param
from voxelhub.core.objects import ObjectStore
from voxelhub.jobs.engine import FINISHED_HERE, Writes

_LOCK_CASE_SQL = "SELECT 1 FROM cases WHERE id = %(case_id)s FOR UPDATE"
# After the case's lock (a statement of its own: this one's snapshot is taken once that is
# held, so it sees every value that the case's last writer committed): the replaced values'
# rows go, the new ones come, the case counts as updated, all only where the end was
# recorded. The INSERT waits for the DELETE (it counts its rows first): a replaced value's
# row holds the same case and interface, which are unique.
_REPLACE_SQL = f"""
WITH here AS (SELECT {FINISHED_HERE} AS recorded),
given AS (
    SELECT * FROM jsonb_to_recordset(%(values)s::jsonb)
        AS v(id uuid, interface varchar(100), kind varchar(30), value jsonb)
), dropped AS (
    DELETE FROM case_values
    WHERE case_id = %(case_id)s AND interface IN (SELECT interface FROM given)
        AND (SELECT recorded FROM here)
    RETURNING object_keys
), added AS (
    INSERT INTO case_values
        (id, case_id, interface, kind, value, object_keys, size_bytes, created_at)
    SELECT given.id, %(case_id)s, given.interface, given.kind, given.value, '[]', 0, %(now)s
    FROM given
    WHERE (SELECT count(*) FROM dropped) >= 0 AND (SELECT recorded FROM here)
), touched AS (
    UPDATE cases SET updated_at = %(now)s
    WHERE id = %(case_id)s AND (SELECT recorded FROM here)
)
SELECT object_keys FROM dropped
"""


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


@dataclass(frozen=True)
class _ScalarWrites:
    """`engine.Writes` of scalar outputs: the case's lock, then one statement that replaces
    its values (`_REPLACE_SQL`)."""

    store: ObjectStore
    case_id: uuid.UUID
    read: list[ScalarOutput]

    def lock(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
        conn.execute(_LOCK_CASE_SQL, {"case_id": self.case_id})

    def write(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> Callable[[], None]:
        replaced = conn.execute(
            _REPLACE_SQL,
            {
                **params,
                "case_id": self.case_id,
                "values": json_param(
                    [
                        {
                            "id": out.value_id,
                            "interface": out.target,
                            "kind": str(out.body["kind"]),
                            "value": out.body,
                        }
                        for out in self.read
                    ]
                ),
            },
        )

        def remove_replaced() -> None:
            for (keys,) in replaced.fetchall():
                for key in keys or ():
                    self.store.delete(key)

        return remove_replaced


def writes(store: ObjectStore, case_id: uuid.UUID, read: list[ScalarOutput]) -> Writes:
    """The statements that store `read` as values of the case with the job's end."""
    return _ScalarWrites(store, case_id, read)
