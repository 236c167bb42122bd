from __future__ import annotations

from flask import Blueprint, abort, request

from .extensions import db, pgq
from .models import Order
from .tasks import confirm_order

bp = Blueprint("shop", __name__)


@bp.post("/orders")
def create_order() -> tuple[dict, int]:
    data = request.get_json()
    order = Order(item=data["item"], quantity=data.get("quantity", 1))
    db.session.add(order)
    db.session.flush()  # the order's id, in the transaction
    # The job is one INSERT on the session's connection: it commits with the order, or not at all.
    job = confirm_order.options(conn=db.session).enqueue(order.id)
    if data.get("fail"):
        raise RuntimeError("payment refused")  # no commit: neither order nor job exists
    db.session.commit()
    return {"order": order.id, "job": job.id}, 201


@bp.get("/orders/<int:order_id>")
def show_order(order_id: int) -> dict:
    order = db.session.get(Order, order_id) or abort(404)
    return {"id": order.id, "item": order.item, "status": order.status}


@bp.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> dict:
    info = pgq.job(job_id).info()
    return {"id": job_id, "status": info["status"], "result": info["result"],
            "attempts": info["attempts"]}
