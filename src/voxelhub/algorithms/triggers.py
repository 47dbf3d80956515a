"""Triggers: run an algorithm when a matching series has arrived in an archive.

A series arrives over many requests (one C-STORE per instance, or several STOW-RS
requests), so a trigger fires once the series has been quiet for a few seconds and no
STOW-RS request into its archive is still in flight (for at most `INGEST_WAIT_MAX` after
the series last changed), at most once per series (a unique row records it). Evaluated by
the workers' periodic duties.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voxelhub.algorithms import service
from voxelhub.algorithms.models import Algorithm, Trigger, TriggerRun
from voxelhub.algorithms.schemas import InputRef, TriggerCreate
from voxelhub.archives import service as archives
from voxelhub.archives import values_service
from voxelhub.archives.models import Case, CaseValue
from voxelhub.archives.values import DicomSeriesValue, as_stored
from voxelhub.auth.models import User
from voxelhub.auth.service import Principal
from voxelhub.core.db import utcnow
from voxelhub.core.errors import BadRequest
from voxelhub.core.objects import ObjectStore
from voxelhub.jobs import engine
from voxelhub.store import ingest_guard
from voxelhub.store.models import Instance, Series, Study

logger = logging.getLogger(__name__)

SETTLE = timedelta(seconds=2)
# A store request still running may hold more of a series; waiting for it has a bound.
INGEST_WAIT_MAX = timedelta(minutes=5)


def create_trigger(
    db: Session, principal: Principal, archive_id: uuid.UUID, body: TriggerCreate
) -> Trigger:
    from voxelhub.auth.roles import ArchiveRole

    archives.get_archive(db, principal, archive_id, ArchiveRole.editor)
    algorithm = service.get_algorithm(db, body.algorithm)
    service.require_use(db, principal, algorithm)
    version = service.latest_version(db, algorithm)
    wanted_kind = None if body.value_interface else "dicom_series"
    if version is None or not any(
        i["interface"] == body.input_interface and wanted_kind in (None, i["kind"])
        for i in version.inputs
    ):
        raise BadRequest(
            f"algorithm {body.algorithm!r} has no {wanted_kind or ''} input "
            f"{body.input_interface!r} for the trigger to fill".replace("  ", " ")
        )
    if body.series_description:
        try:
            re.compile(body.series_description)
        except re.error as err:
            raise BadRequest(
                f"series_description is not a valid regular expression: {err}"
            ) from err
    rule = {
        "value_interface": body.value_interface,
        "modality": body.modality,
        "min_instances": body.min_instances,
        "min_images": body.min_images,
        "series_description": body.series_description,
    }
    trigger = Trigger(
        archive_id=archive_id,
        algorithm_id=algorithm.id,
        rule=rule,
        input_interface=body.input_interface,
        created_by=principal.user_id,
    )
    db.add(trigger)
    db.flush()
    return trigger


RAW_KSPACE = "kspace"
PREPROCESSED_KSPACE = "mri-preprocess.kspace-preprocessed"


def ensure_reconstruction(
    db: Session, principal: Principal, archive_id: uuid.UUID, method: str
) -> list[str]:
    """The two triggers that reconstruct raw k-space arriving in the archive: mri-preprocess
    on each new `kspace` value, mri-recon-`method` on each preprocessed one. Creates the
    ones missing (the same algorithm on the same value, whoever made it), leaves every
    other trigger alone; returns the algorithms of those it created."""
    wanted = [
        TriggerCreate(
            algorithm="mri-preprocess", input_interface="kspace", value_interface=RAW_KSPACE
        ),
        TriggerCreate(
            algorithm=f"mri-recon-{method}",
            input_interface="kspace",
            value_interface=PREPROCESSED_KSPACE,
        ),
    ]
    existing = {
        (slug, (rule or {}).get("value_interface"))
        for slug, rule in db.execute(
            select(Algorithm.slug, Trigger.rule)
            .join(Algorithm, Algorithm.id == Trigger.algorithm_id)
            .where(Trigger.archive_id == archive_id)
        )
    }
    created = []
    for body in wanted:
        if (body.algorithm, body.value_interface) not in existing:
            create_trigger(db, principal, archive_id, body)
            created.append(body.algorithm)
    return created


def _matches(db: Session, rule: dict[str, Any], series: Series) -> bool:
    if rule.get("modality") and series.modality.upper() != str(rule["modality"]).upper():
        return False
    if series.number_of_instances < int(rule.get("min_instances") or 1):
        return False
    pattern = rule.get("series_description")
    if pattern and re.search(pattern, series.series_description or "") is None:
        return False
    min_images = int(rule.get("min_images") or 1)
    return min_images <= series.number_of_instances or _images(db, series) >= min_images


def _images(db: Session, series: Series) -> int:
    """The series' images: each instance's frames, one for an instance without frames."""
    count = select(func.coalesce(func.sum(func.greatest(Instance.number_of_frames, 1)), 0))
    return int(db.scalar(count.where(Instance.series_id == series.id)) or 0)


def _case_for(db: Session, archive_id: uuid.UUID, study: Study, series: Series) -> Any:
    title = (
        f"{study.patient_id or 'unknown'} {study.study_date or ''} series "
        f"{series.series_number if series.series_number is not None else '-'} "
        f"{series.series_instance_uid[-8:]}"
    )
    return archives.create_case(db, archive_id, " ".join(title.split()))


def evaluate(db: Session, store: ObjectStore, send: engine.Sender, *, prewarm: bool = False) -> int:
    """Start the jobs of every trigger whose rule a settled, new series matches.

    With `prewarm` (a worker that runs its jobs in this process), a MONAI bundle whose
    trigger matches a series still arriving is started ahead on a warm process
    (`warm.WarmBundles.prewarm`), so loading the model overlaps the arrival.
    """
    started = 0
    cutoff = utcnow() - SETTLE
    for trigger in db.scalars(select(Trigger).where(Trigger.enabled.is_(True))):
        if trigger.rule.get("value_interface"):
            started += _evaluate_values(db, send, trigger, cutoff)
            continue
        fired = select(TriggerRun.series_id).where(TriggerRun.trigger_id == trigger.id)
        settled = cutoff
        if ingest_guard.in_flight(db, trigger.archive_id):
            settled = min(cutoff, utcnow() - INGEST_WAIT_MAX)
        candidates = db.execute(
            select(Series, Study)
            .join(Study, Study.id == Series.study_id)
            .where(
                Series.archive_id == trigger.archive_id,
                Series.updated_at < settled,
                Series.created_at > trigger.created_at,
                Series.id.not_in(fired),
            )
            .limit(100)
        ).all()
        for series, study in candidates:
            if _matches(db, trigger.rule, series):
                started += _fire(db, store, send, trigger=trigger, study=study, series=series)
        if prewarm and _arriving(db, trigger, settled=settled, fired=fired):
            _prewarm(db, store, trigger)
    return started


def _arriving(db: Session, trigger: Trigger, *, settled: Any, fired: Any) -> bool:
    """Whether a series the trigger may fire on is still arriving (not settled yet)."""
    arriving = db.scalars(
        select(Series)
        .where(
            Series.archive_id == trigger.archive_id,
            Series.updated_at >= settled,
            Series.created_at > trigger.created_at,
            Series.id.not_in(fired),
        )
        .limit(20)
    )
    # The instance count grows while it arrives; the rest of the rule is known already.
    rule = dict(trigger.rule, min_instances=1, min_images=1)
    return any(_matches(db, rule, series) for series in arriving)


def _prewarm(db: Session, store: ObjectStore, trigger: Trigger) -> None:
    from voxelhub.algorithms.realtime_bundles import is_bundle, limits_of, unpacked
    from voxelhub.algorithms.warm import WarmError, warm_bundles

    algorithm = db.get(Algorithm, trigger.algorithm_id)
    version = service.latest_version(db, algorithm) if algorithm is not None else None
    if version is None or version.kind != "package" or version.entrypoint:
        return
    key = version.package_key
    if key is None or key in _not_bundles:
        return

    def package_dir() -> Any:
        folder = unpacked(store, key)
        if not is_bundle(folder):
            _not_bundles.add(key)
            raise WarmError(f"the package {key} is not a MONAI bundle")
        return folder

    if warm_bundles().prewarm(key, package_dir, limits=limits_of(version)):
        logger.info("trigger %s: starting bundle %s ahead of its series", trigger.id, key)


# Packages found not to be bundles: never started ahead again.
_not_bundles: set[str] = set()


def _evaluate_values(db: Session, send: engine.Sender, trigger: Trigger, cutoff: Any) -> int:
    fired = select(TriggerRun.value_id).where(
        TriggerRun.trigger_id == trigger.id, TriggerRun.value_id.is_not(None)
    )
    rows = db.execute(
        select(CaseValue, Case)
        .join(Case, Case.id == CaseValue.case_id)
        .where(
            Case.archive_id == trigger.archive_id,
            CaseValue.interface == trigger.rule["value_interface"],
            CaseValue.created_at > trigger.created_at,
            CaseValue.created_at < cutoff,
            CaseValue.id.not_in(fired),
        )
        .limit(100)
    ).all()
    started = 0
    for value, case in rows:
        run = TriggerRun(trigger_id=trigger.id, value_id=value.id)
        db.add(run)
        started += _start_for(db, send, trigger, run, case_id=case.id, source=value.interface)
    return started


def _start_for(
    db: Session,
    send: engine.Sender,
    trigger: Trigger,
    run: TriggerRun,
    *,
    case_id: uuid.UUID,
    source: str,
) -> int:
    owner = db.get(User, trigger.created_by) if trigger.created_by else None
    algorithm = db.get(Algorithm, trigger.algorithm_id)
    if owner is None or algorithm is None or not owner.is_active:
        run.error = "the trigger's owner or algorithm is gone"
        return 0
    principal = Principal(
        user_id=owner.id, username=owner.username, is_admin=owner.is_admin, via="system"
    )
    try:
        with db.begin_nested():
            job = service.start_job(
                db,
                principal,
                algorithm,
                archive_id=trigger.archive_id,
                case_id=case_id,
                inputs={trigger.input_interface: InputRef(from_case=source)},
                send=send,
                trigger_id=trigger.id,
            )
            run.job_id = job.id
    except Exception as err:
        run.error = f"{type(err).__name__}: {err}"[:2000]
        logger.warning("trigger %s on case %s failed: %s", trigger.id, case_id, run.error)
        return 0
    return 1


def _fire(
    db: Session,
    store: ObjectStore,
    send: engine.Sender,
    *,
    trigger: Trigger,
    study: Study,
    series: Series,
) -> int:
    run = TriggerRun(trigger_id=trigger.id, series_id=series.id)
    db.add(run)
    owner = db.get(User, trigger.created_by) if trigger.created_by else None
    algorithm = db.get(Algorithm, trigger.algorithm_id)
    if owner is None or algorithm is None or not owner.is_active:
        run.error = "the trigger's owner or algorithm is gone"
        return 0
    principal = Principal(
        user_id=owner.id, username=owner.username, is_admin=owner.is_admin, via="system"
    )
    try:
        with db.begin_nested():
            case = _case_for(db, trigger.archive_id, study, series)
            value = DicomSeriesValue(
                study_instance_uid=study.study_instance_uid,
                series_instance_uid=series.series_instance_uid,
                modality=series.modality,
                number_of_instances=series.number_of_instances,
                series_description=series.series_description,
            )
            values_service.set_series(db, store, case, trigger.input_interface, as_stored(value))
            job = service.start_job(
                db,
                principal,
                algorithm,
                archive_id=trigger.archive_id,
                case_id=case.id,
                inputs={trigger.input_interface: InputRef(from_case=trigger.input_interface)},
                send=send,
                trigger_id=trigger.id,
            )
            run.job_id = job.id
    except Exception as err:
        run.error = f"{type(err).__name__}: {err}"[:2000]
        logger.warning("trigger %s on series %s failed: %s", trigger.id, series.id, run.error)
        return 0
    logger.info("trigger %s started job %s for series %s", trigger.id, run.job_id, series.id)
    return 1
