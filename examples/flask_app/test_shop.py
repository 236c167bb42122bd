"""The example's own tests, as a user writes them: the real database (DATABASE_URL), and the
jobs a request enqueued run in the test itself, by pgqueue.testing (through the worker's
code), or at once in eager mode."""

from __future__ import annotations

import pytest

from shop import create_app
from shop.extensions import db, pgq


@pytest.fixture
def app():
    app = create_app({"TESTING": True})
    with app.app_context():
        pgq.get_app().migrate()
        db.create_all()
    yield app
    with app.app_context():
        db.drop_all()
        db.engine.dispose()
    pgq.get_app(app).close()


def test_an_order_is_confirmed_by_its_job(app):
    client = app.test_client()
    created = client.post("/orders", json={"item": "tea", "quantity": 2}).get_json()
    assert client.get(f"/orders/{created['order']}").get_json()["status"] == "new"
    ran = pgq.run_pending(app)           # claims, runs and records, as `flask pgqueue work` would
    assert (ran.succeeded, ran.failed) == (1, 0)
    assert client.get(f"/orders/{created['order']}").get_json()["status"] == "confirmed"
    assert client.get(f"/jobs/{created['job']}").get_json()["result"] == \
        f"order {created['order']} confirmed: 2 x tea"


def test_a_failed_request_leaves_no_job(app):
    client = app.test_client()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.post("/orders", json={"item": "tea", "fail": True}).status_code == 500
    assert pgq.run_pending(app).claimed == 0


def test_eager_mode(app):
    app.config["PGQUEUE_EAGER"] = True   # jobs run as soon as they commit
    client = app.test_client()
    created = client.post("/orders", json={"item": "cake"}).get_json()
    assert client.get(f"/orders/{created['order']}").get_json()["status"] == "confirmed"
