"""The example's tasks, one of each kind (both found here, in the app's tasks.py)."""

from decimal import Decimal

from pgqueue.contrib.django import app

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task

from .models import Order


# The classic pgqueue way: @app.task, with pgqueue's options.
@app.task(queue="emails", max_attempts=5)
def send_confirmation(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    # ... send the e-mail here ...
    Order.objects.filter(id=order_id).update(confirmation_sent=True)
    return f"confirmation sent to {order.customer}"


# The django.tasks way: @task, run by the same pgqueue worker.
@task(priority=10)
def compute_total(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    total = sum((Decimal(str(item["price"])) for item in order.items), Decimal("0"))
    Order.objects.filter(id=order_id).update(total=total)
    return str(total)
