"""The extensions, made before any app (the factory initialises them)."""

from flask_sqlalchemy import SQLAlchemy

from pgqueue.contrib.flask import PgQueue

db = SQLAlchemy()
pgq = PgQueue()
