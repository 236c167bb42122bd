"""The example's own tests, as a user writes them: the app through httpx's ASGI transport, the
real database (DATABASE_URL), and the jobs a request enqueued run in the test by
pgqueue.testing.run_pending (the worker's own code, in this process)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from pgqueue.testing import run_pending
from shopapi.main import api, lifespan
from shopapi.tasks import queue


@pytest.fixture(autouse=True, scope="module")
def schema():
    queue.migrate()
    yield
    queue.close()


async def _client_session(scenario):
    async with lifespan(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            return await scenario(client)


def test_an_order_is_confirmed_by_its_job():
    async def scenario(client):
        created = (await client.post("/orders", json={"item": "tea", "quantity": 2})).json()
        assert (await client.get(f"/orders/{created['order']}")).json()["status"] == "new"
        ran = await asyncio.to_thread(run_pending, queue)   # off the loop: it waits for the jobs
        assert (ran.succeeded, ran.failed) == (1, 0)
        assert (await client.get(f"/orders/{created['order']}")).json()["status"] == "confirmed"
        job = (await client.get(f"/jobs/{created['job']}", params={"wait": 5})).json()
        assert job["result"] == f"order {created['order']} confirmed: 2 x tea"

    asyncio.run(_client_session(scenario))


def test_a_failed_request_leaves_no_job():
    async def scenario(client):
        assert (await client.post("/orders", json={"item": "tea", "fail": True})).status_code == 402
        assert (await asyncio.to_thread(run_pending, queue)).claimed == 0

    asyncio.run(_client_session(scenario))
