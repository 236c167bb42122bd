from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db


class Order(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(default="new")
    confirmed_at: Mapped[dt.datetime | None]
