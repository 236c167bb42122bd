"""The queue and its tasks: ``pgqueue --app shopapi.tasks:queue work`` runs them.

An ``async def`` task runs on the worker's event loop. It has an engine of its own without a
pool (NullPool): a pooled async connection belongs to the loop that opened it, and the web
app's engine lives on the web server's loop.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

import pgqueue

from .models import Order, database_url

queue = pgqueue.App()  # PGQUEUE_DSN, else DATABASE_URL
_engine = create_async_engine(database_url(), poolclass=NullPool)
_sessions = async_sessionmaker(_engine, expire_on_commit=False)


@queue.task(max_attempts=5)
async def confirm_order(order_id: int) -> str:
    async with _sessions() as session:
        order = await session.get(Order, order_id)
        if order is None:  # cannot happen: the job commits with its order
            raise pgqueue.NoRetry(f"no order {order_id}")
        order.status = "confirmed"
        order.confirmed_at = dt.datetime.now(dt.timezone.utc)
        await session.commit()
        return f"order {order_id} confirmed: {order.quantity} x {order.item}"
