"""The same jobs on the scale-out brokers: Redis and RabbitMQ (real servers on this host)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SECRET, Account
from tests.jobs.conftest import Worker, wait_for_job
from voxelhub.core.settings import Settings, load_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("builtins_registered")]

BROKERS = {
    "redis": lambda: f"redis://127.0.0.1:6379/{random.randint(1, 15)}",
    "rabbitmq": lambda: "amqp://guest:guest@127.0.0.1:5672//",
}


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    return str(BROKERS[request.param]())


@pytest.fixture
def settings(tmp_path: Path, database_url: str, broker_url: str) -> Settings:
    return load_settings(
        home=tmp_path / "home", database_url=database_url, secret_key=SECRET, broker_url=broker_url
    )


def test_jobs_run_through_the_broker(
    client: TestClient,
    make_user,
    case_with_series,
    start_worker: Callable[..., Worker],
    broker_url: str,
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user)
    start_worker(env={"VOXELHUB_BROKER_URL": broker_url})
    ids = []
    for n in range(5):
        response = client.post(
            "/api/v1/algorithms/echo/jobs",
            json={
                "archive_id": case.archive_id,
                "case_id": case.case_id,
                "inputs": {"payload": {"value": {"n": n}}},
            },
            headers=user.headers,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for job_id in ids:
        assert wait_for_job(client, user, job_id)["state"] == "succeeded"


def test_a_redis_channel_keeps_one_client_until_its_pool_changes() -> None:
    from celery import Celery

    from voxelhub.jobs import broker, broker_redis

    broker.register()
    app = Celery("test", broker=BROKERS["redis"](), set_as_current=False)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker_redis.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        channel._disconnect_pools()  # as after a fork: a new pool, so a new client
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.ping()
