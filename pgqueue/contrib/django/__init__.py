"""pgqueue for Django: ``"pgqueue.contrib.django"`` in ``INSTALLED_APPS`` (app label ``pgqueue``).

Two ways to define and enqueue tasks, run by the same worker (``manage.py pgqueue work``):

* the classic App::

      from pgqueue.contrib.django import app

      @app.task(max_attempts=5)
      def send_welcome(user_id: int) -> None: ...

      with transaction.atomic():
          user = User.objects.create(...)
          send_welcome.enqueue(user.id)        # commits or rolls back with the user

* ``django.tasks`` (Django 6; the ``django-tasks`` backport on 5.2), with
  ``TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.backend.PgQueueBackend"}}``::

      from django.tasks import task

      @task(priority=10)
      def send_welcome(user_id: int) -> None: ...

      with transaction.atomic():
          user = User.objects.create(...)
          result = send_welcome.enqueue(user.id)   # same guarantee; result.refresh() later

Both enqueue on Django's connection of ``PGQUEUE_DATABASE_ALIAS``, inside the caller's
transaction. Importing this package, and decorating tasks, touches no database.
"""

from .application import DjangoApp

#: The project's pgqueue App (settings from Django's PGQUEUE_* settings).
app = DjangoApp()

__all__ = ["DjangoApp", "app"]
