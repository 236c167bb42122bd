from django.db import models


class Order(models.Model):
    customer = models.TextField()
    items = models.JSONField(default=list)  # [{"name": ..., "price": ...}]
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    confirmation_sent = models.BooleanField(default=False)
    # Ids of the work enqueued with the order: a pgqueue job and a django.tasks result.
    confirmation_job = models.BigIntegerField(null=True)
    total_result = models.TextField(null=True)
