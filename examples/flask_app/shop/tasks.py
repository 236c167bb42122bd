"""The shop's tasks. They run in the worker inside ``app.app_context()``: ``current_app`` and
``db.session`` work as in a view, and the session is removed after each task."""

from __future__ import annotations

import datetime as dt

from flask import current_app

import pgqueue

from .extensions import db, pgq
from .models import Order


@pgq.task(max_attempts=5)
def confirm_order(order_id: int) -> str:
    order = db.session.get(Order, order_id)
    if order is None:  # cannot happen: the job commits with its order
        raise pgqueue.NoRetry(f"no order {order_id}")
    order.status = "confirmed"
    order.confirmed_at = dt.datetime.now(dt.timezone.utc)
    db.session.commit()
    current_app.logger.info("order %s confirmed (job attempt %s)", order_id,
                            pgqueue.current_job().attempt)
    return f"order {order_id} confirmed: {order.quantity} x {order.item}"
