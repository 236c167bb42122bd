"""pgqueue's Flask example: a shop whose order view writes the order and enqueues its
confirmation in one transaction; ``flask pgqueue work`` confirms it."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from .extensions import db, pgq


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    # One database for the shop and its queue: Flask-SQLAlchemy's (psycopg 2 or 3 URLs).
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL",
                                                           "postgresql://localhost/shop")
    app.config["PGQUEUE_USE_SQLALCHEMY"] = True
    app.config.update(config or {})
    db.init_app(app)
    pgq.init_app(app)

    from . import views

    app.register_blueprint(views.bp)

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables (pgqueue's schema: flask pgqueue migrate)."""
        db.create_all()

    return app
