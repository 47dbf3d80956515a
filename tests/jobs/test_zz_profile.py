import cProfile, pstats, time
import pytest
from tests.conftest import Account

pytestmark = [pytest.mark.usefixtures("builtins_registered")]

def test_profile_invoke(client, make_user):
    user: Account = make_user("rt")
    body = {"inputs": {"payload": {"x": [1, 2, 3]}}}
    for _ in range(30):
        assert client.post("/api/v1/algorithms/echo/invoke", json=body, headers=user.headers).status_code == 200
    t = time.process_time()
    pr = cProfile.Profile(); pr.enable()
    for _ in range(100):
        client.post("/api/v1/algorithms/echo/invoke", json=body, headers=user.headers)
    pr.disable()
    print("CPU ms/call (incl. client, profiled)", (time.process_time() - t) * 10)
    pstats.Stats(pr).sort_stats("tottime").print_stats(30)
