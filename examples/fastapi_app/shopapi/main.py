"""The web app: ``uvicorn shopapi.main:api``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import pgqueue

from .models import Base, Order, database_url
from .tasks import confirm_order, queue

engine = create_async_engine(database_url())
sessions = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await queue.aclose()  # pgqueue's async pool on this loop
    await engine.dispose()


api = FastAPI(lifespan=lifespan)


async def session() -> AsyncIterator[AsyncSession]:
    async with sessions() as s:
        yield s  # closed without a commit: rolled back, and any job enqueued on it with it


class NewOrder(BaseModel):
    item: str
    quantity: int = 1
    fail: bool = False


@api.post("/orders", status_code=201)
async def create_order(body: NewOrder, s: AsyncSession = Depends(session)) -> dict[str, int]:
    order = Order(item=body.item, quantity=body.quantity)
    s.add(order)
    await s.flush()  # the order's id, in the transaction
    # One INSERT on the session's connection: the job commits with the order, or not at all.
    job = await confirm_order.options(conn=s).aenqueue(order.id)
    if body.fail:
        raise HTTPException(402, "payment refused")  # no commit: neither order nor job exists
    await s.commit()
    return {"order": order.id, "job": job.id}


@api.get("/orders/{order_id}")
async def show_order(order_id: int, s: AsyncSession = Depends(session)) -> dict[str, Any]:
    order = await s.get(Order, order_id)
    if order is None:
        raise HTTPException(404)
    return {"id": order.id, "item": order.item, "status": order.status}


@api.get("/jobs/{job_id}")
async def show_job(job_id: int, wait: float = 0) -> dict[str, Any]:
    job = queue.job(job_id)
    try:
        if wait:  # sleeps on the job's notification; the loop serves other requests meanwhile
            return {"id": job_id, "status": "succeeded", "result": await job.aresult(timeout=wait)}
        return {"id": job_id, "status": await job.astatus()}
    except pgqueue.JobNotFound:
        raise HTTPException(404) from None
    except pgqueue.ResultTimeout:
        return {"id": job_id, "status": await job.astatus()}
    except pgqueue.JobFailed as exc:
        return {"id": job_id, "status": "failed", "error": exc.error}
