from django.db import models


class Note(models.Model):
    """A row the tests write in the same transaction as an enqueue."""

    text = models.TextField()


class Seen(models.Model):
    """What tasks and signal receivers in the worker did: one row each."""

    what = models.TextField()
    job_id = models.BigIntegerField(null=True)
    attempt = models.IntegerField(null=True)
    detail = models.JSONField(null=True)
    pid = models.IntegerField(null=True)
    at = models.DateTimeField(auto_now_add=True)
