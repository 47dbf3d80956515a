"""The reading benchmarks: QIDO-RS study search and whole-series retrieval."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import httpx
import numpy as np
from _common import MB, Data, Sizes, say, settle
from _data import CorpusStudy, SeriesFiles, write_corpus
from _dicomweb import qido_latencies, retrieve_frames, retrieve_series, stow_concurrently
from _servers import CpuMeter, Server, Voxelhub

EXPLICIT_LE = "1.2.840.10008.1.2.1"
# The QIDO index holds this many instances per study: the corpus sent over STOW has one
# (a 16x16 slice per study); the rest are index rows added in bulk (see `bulk_instances`).
INSTANCES_PER_STUDY = 50


# --- 3. QIDO-RS ---------------------------------------------------------------------------


ROUND = 1000


def qido(servers: list[Server], data: Data, sizes: Sizes) -> dict[str, Any]:
    corpus = write_corpus(data.root / "corpus", studies=sizes.qido_studies)
    ingest = _build_corpus(servers, corpus, sizes)
    indexed = corpus[: ingest["studies"]]
    for server in servers:
        if isinstance(server, Voxelhub):
            ingest[server.name]["bulk"] = bulk_instances(server, per_study=INSTANCES_PER_STUDY)
    queries = make_queries(indexed, sizes.qido_queries)
    out: dict[str, Any] = {"corpus": ingest, "queries": len(queries), "mix": _mix(queries)}
    counts: dict[str, list[int]] = {}
    for server in servers:
        settle()
        latencies, found = qido_latencies(
            server.dicomweb, server.headers, queries, warmup=20, time_limit_s=300
        )
        counts[server.name] = found
        ms = sorted(1000 * s for s in latencies)
        out[server.name] = {
            "p50_ms": _percentile(ms, 50),
            "p99_ms": _percentile(ms, 99),
            "mean_ms": statistics.fmean(ms),
            "max_ms": ms[-1],
            "queries": len(ms),
            "studies_returned": sum(found),
            "by_kind": _by_kind(queries, latencies),
        }
        say(
            f"QIDO {server.name}: p50 {out[server.name]['p50_ms']:.1f} ms, "
            f"p99 {out[server.name]['p99_ms']:.1f} ms over {len(ms)} queries"
        )
    if len(counts) == 2:
        first, second = counts.values()
        out["queries_with_different_counts"] = sum(
            a != b for a, b in zip(first, second, strict=False)
        )
    return out


def _build_corpus(servers: list[Server], corpus: list[CorpusStudy], sizes: Sizes) -> dict[str, Any]:
    """Send the corpus to every server in rounds of ROUND studies, stopping after the round
    that passes the time budget, so both servers always hold the same studies."""
    spent = dict.fromkeys((s.name for s in servers), 0.0)
    stored = dict.fromkeys((s.name for s in servers), 0)
    done = 0
    while done < len(corpus) and max(spent.values()) < sizes.qido_ingest_budget_s:
        chunk = [study.path for study in corpus[done : done + ROUND]]
        halves = [chunk[0::2], chunk[1::2]]
        for server in servers:
            outcome, seconds = stow_concurrently(
                server.stow_url, server.headers, halves, batch=100, time_limit_s=600
            )
            spent[server.name] += seconds
            stored[server.name] += outcome.stored
            if outcome.errors:
                say(f"corpus {server.name}", outcome.errors)
        done += len(chunk)
    figures: dict[str, Any] = {"studies": done, "target": len(corpus)}
    for name in spent:
        figures[name] = {
            "stored": stored[name],
            "seconds": spent[name],
            "instances_per_s": stored[name] / spent[name] if spent[name] else 0,
        }
    say(f"QIDO corpus: {done} of {len(corpus)} studies indexed in each server")
    return figures


# A bench fixture, not a way to ingest: index rows only, written straight into voxelhub's own
# tables. Each study gets one more series of `per_study - 1` instances whose rows copy the
# study's real instance (its DICOM JSON with a new SOPInstanceUID and InstanceNumber); their
# object keys point at nothing, which no study-level query reads. Study and series counters
# are set as ingest sets them, so study searches return the same counts as before.
_BULK_SQL = [
    """
    CREATE TEMP TABLE bench_source ON COMMIT DROP AS
    SELECT DISTINCT ON (st.id) st.id AS study_id, st.archive_id, i.id AS instance_id,
           gen_random_uuid() AS series_id, st.study_instance_uid
    FROM dicom_studies st JOIN dicom_series se ON se.study_id = st.id
    JOIN dicom_instances i ON i.series_id = se.id
    WHERE st.number_of_series = 1 AND st.number_of_instances = 1
    ORDER BY st.id, i.created_at
    """,
    """
    INSERT INTO dicom_series (id, created_at, updated_at, archive_id, study_id,
        series_instance_uid, modality, series_number, series_description,
        number_of_instances, size_bytes, version, metadata_key, metadata_version)
    SELECT b.series_id, now(), now(), b.archive_id, b.study_id,
        '2.25.' || ('x' || substr(md5(b.series_id::text), 1, 15))::bit(60)::bigint,
        'CT', 2, 'BULK INDEX ROWS', %(count)s, 0, 1, NULL, -1
    FROM bench_source b
    """,
    """
    INSERT INTO dicom_instances (id, created_at, archive_id, series_id, sop_instance_uid,
        sop_class_uid, instance_number, transfer_syntax_uid, frames_transfer_syntax_uid,
        number_of_frames, rows, columns, pixel, object_key, header_length, frame_offsets,
        size_bytes, content_sha256, dataset_json)
    SELECT gen_random_uuid(), now(), i.archive_id, b.series_id, uid.value,
        i.sop_class_uid, g, i.transfer_syntax_uid, i.frames_transfer_syntax_uid,
        i.number_of_frames, i.rows, i.columns, i.pixel,
        'imagesets/' || b.series_id || '/' || uid.value || '.bulk', i.header_length,
        i.frame_offsets, i.size_bytes, md5(uid.value) || md5(uid.value),
        jsonb_set(jsonb_set(i.dataset_json, '{00080018,Value}', jsonb_build_array(uid.value)),
                  '{00200013,Value}', jsonb_build_array(g))
    FROM bench_source b JOIN dicom_instances i ON i.id = b.instance_id
    CROSS JOIN generate_series(1, %(count)s) AS g
    CROSS JOIN LATERAL (SELECT '2.25.' || ('x' || substr(md5(b.series_id::text || g), 1, 15))
                        ::bit(60)::bigint || g AS value) AS uid
    """,
    """
    UPDATE dicom_studies st SET number_of_series = st.number_of_series + 1,
        number_of_instances = st.number_of_instances + %(count)s
    FROM bench_source b WHERE b.study_id = st.id
    """,
]


def bulk_instances(server: Voxelhub, *, per_study: int) -> dict[str, Any]:
    """Grow voxelhub's index to `per_study` instances per study (see `_BULK_SQL`)."""
    import psycopg

    from voxelhub.core.pg import EmbeddedPostgres

    url = EmbeddedPostgres.for_home(server.folder).url.replace("postgresql+psycopg", "postgresql")
    started = time.perf_counter()
    steps = []
    with psycopg.connect(url) as connection:
        for statement in _BULK_SQL:
            connection.execute(statement, {"count": per_study - 1})
            steps.append(time.perf_counter() - started)
        connection.commit()
        # What autovacuum reaches within a minute of such a bulk change: the visibility map
        # lets a deep page (offset) of study search skip index entries without heap reads.
        connection.autocommit = True
        connection.execute("VACUUM (ANALYZE) dicom_studies, dicom_series")
        connection.execute("ANALYZE dicom_instances")
        steps.append(time.perf_counter() - started)
        instances = connection.execute("SELECT count(*) FROM dicom_instances").fetchone()
        studies = connection.execute("SELECT count(*) FROM dicom_studies").fetchone()
    figures = {
        "instances_indexed": instances[0] if instances else 0,
        "studies_indexed": studies[0] if studies else 0,
        "seconds": time.perf_counter() - started,
        "step_seconds": steps,
    }
    say(
        f"QIDO corpus: {server.name} index grown to {figures['instances_indexed']} instances "
        f"of {figures['studies_indexed']} studies in {figures['seconds']:.0f} s (index rows)"
    )
    return figures


def make_queries(corpus: list[CorpusStudy], count: int, seed: int = 11) -> list[str]:
    """A study-search mix: 30% PatientID, 25% PatientName prefix, 25% a month of
    StudyDate, 20% a page of 25."""
    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        study = rng.choice(corpus)
        pick = rng.random()
        if pick < 0.30:
            queries.append(f"PatientID={study.patient_id}")
        elif pick < 0.55:
            surname = study.patient_name.split("^")[0]
            queries.append(f"PatientName={surname[: rng.randint(3, 5)]}*")
        elif pick < 0.80:
            year, month = study.study_date[:4], study.study_date[4:6]
            queries.append(f"StudyDate={year}{month}01-{year}{month}31")
        else:
            queries.append(f"limit=25&offset={25 * rng.randrange(max(len(corpus) // 25, 1))}")
    return queries


def _by_kind(queries: list[str], latencies: list[float]) -> dict[str, dict[str, float]]:
    kinds: dict[str, list[float]] = {}
    for query, seconds in zip(queries, latencies, strict=False):
        kinds.setdefault(query.split("=")[0], []).append(1000 * seconds)
    return {
        kind: {
            "p50_ms": _percentile(sorted(v), 50),
            "p99_ms": _percentile(sorted(v), 99),
            "count": len(v),
        }
        for kind, v in kinds.items()
    }


def _mix(queries: list[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for query in queries:
        kind = query.split("=")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _percentile(sorted_values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(sorted_values), q)) if sorted_values else float("nan")


# --- 4. Whole-series retrieval ------------------------------------------------------------


def retrieve(servers: list[Server], sizes: Sizes, series: SeriesFiles) -> dict[str, Any]:
    expected = _expected_checksum(series)
    out: dict[str, Any] = {"slices": len(series.paths), "size": sizes.size}
    variants = {
        "series_stored": lambda s: retrieve_series(
            s.dicomweb,
            s.headers,
            series.study_instance_uid,
            series.series_instance_uid,
            slices=len(series.paths),
            size=sizes.size,
        ),
        "frames_stored": lambda s: retrieve_frames(
            s.dicomweb,
            s.headers,
            series.study_instance_uid,
            series.series_instance_uid,
            slices=len(series.paths),
            size=sizes.size,
            syntax="*",
        ),
        "frames_native": lambda s: retrieve_frames(
            s.dicomweb,
            s.headers,
            series.study_instance_uid,
            series.series_instance_uid,
            slices=len(series.paths),
            size=sizes.size,
            syntax=EXPLICIT_LE,
        ),
    }
    for variant, run in variants.items():
        for server in servers:
            runs, cpu_server, cpu_client = [], [], []
            try:
                for _ in range(sizes.retrieve_repeats):
                    settle()
                    client_before = time.process_time()
                    with CpuMeter(server.root_pids()) as cpu:
                        runs.append(run(server))
                    cpu_server.append(cpu.seconds)
                    cpu_client.append(time.process_time() - client_before)
            except (RuntimeError, httpx.HTTPError) as err:
                out.setdefault(variant, {})[server.name] = {
                    "error": f"{type(err).__name__}: {err}"[:600]
                }
                say(f"retrieve {variant} {server.name} failed: {err}"[:600])
                continue
            middle = sorted(range(len(runs)), key=lambda i: runs[i].seconds)[len(runs) // 2]
            best = runs[middle]
            figures = {
                "server_cpu_seconds": cpu_server[middle],
                "client_cpu_seconds": cpu_client[middle],
                "seconds": best.seconds,
                "all_seconds": [r.seconds for r in runs],
                "metadata_seconds": best.metadata_seconds,
                "all_metadata_seconds": [r.metadata_seconds for r in runs],
                "frames": best.frames,
                "mb_received": best.bytes_received / MB,
                "transfer_syntaxes": sorted(best.syntaxes),
                "volume_matches_source": best.volume_checksum == expected,
            }
            out.setdefault(variant, {})[server.name] = figures
            say(
                f"retrieve {variant} {server.name}: {best.seconds:.2f} s, {best.frames} frames, "
                f"{figures['mb_received']:.0f} MB, {sorted(best.syntaxes)}, "
                f"volume ok: {figures['volume_matches_source']}"
            )
    return out


def _expected_checksum(series: SeriesFiles) -> int:
    from pydicom import dcmread

    total = 0
    for path in series.paths:
        total += int(np.frombuffer(dcmread(path).PixelData, dtype="<u2").sum(dtype=np.int64))
    return total
