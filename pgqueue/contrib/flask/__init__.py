"""pgqueue for Flask: ``pgqueue.contrib.flask.PgQueue`` (``pip install "pgqueue[flask]"``).

::

    from flask import Flask
    from pgqueue.contrib.flask import PgQueue

    pgq = PgQueue()                       # no app yet: tasks can be declared already

    @pgq.task(queue="emails")
    def send_welcome(user_id: int) -> None:
        user = db.session.get(User, user_id)   # current_app, db.session work in tasks
        ...

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["PGQUEUE_DSN"] = "postgresql://..."   # or PGQUEUE_USE_SQLALCHEMY = True
        db.init_app(app)
        pgq.init_app(app)
        return app

    # in a view: the job commits, or vanishes, with the session
    db.session.add(user)
    send_welcome.options(conn=db.session).enqueue(user.id)
    db.session.commit()

``flask pgqueue migrate`` creates the schema, ``flask pgqueue work`` runs a worker, ``flask
pgqueue status`` shows the queues. See ``extension`` (configuration), ``tasks``, ``eager``
(the eager mode for tests) and ``cli``.
"""

from .extension import AppState, PgQueue
from .tasks import FlaskEnqueueOptions, FlaskTask

__all__ = ["AppState", "FlaskEnqueueOptions", "FlaskTask", "PgQueue"]
