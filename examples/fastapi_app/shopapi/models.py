"""The shop's table, and the URL both the web app and the worker use."""

from __future__ import annotations

import datetime as dt
import os

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def database_url() -> str:
    """DATABASE_URL (what pgqueue reads too), on psycopg 3: SQLAlchemy's async driver for it."""
    url = os.environ.get("DATABASE_URL", "postgresql://localhost/shop")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(default="new")
    confirmed_at: Mapped[dt.datetime | None]
