"""A view that writes a row and enqueues work in the same transaction, both ways.

With ATOMIC_REQUESTS (settings.py) the whole request is one transaction: if anything below
fails, the order and both jobs are rolled back together; once it commits, a worker
(`manage.py pgqueue work`) runs them. Without ATOMIC_REQUESTS, wrap the block in
`transaction.atomic()` for the same guarantee.
"""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pgqueue.contrib.django import app

from .models import Order
from .tasks import compute_total, send_confirmation


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    order = Order.objects.create(customer=body["customer"], items=body.get("items", []))
    job = send_confirmation.enqueue(order.id)  # pgqueue.Job
    result = compute_total.enqueue(order.id)  # django.tasks TaskResult
    order.confirmation_job, order.total_result = job.id, result.id
    order.save(update_fields=["confirmation_job", "total_result"])
    if body.get("fail"):  # show the guarantee: nothing of this request is kept
        raise RuntimeError("failing after enqueueing, on purpose")
    return JsonResponse({"order": order.id, "job": job.id, "result": result.id}, status=201)


@require_GET
def show_order(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.get(id=order_id)
    result = compute_total.get_result(order.total_result)
    return JsonResponse({
        "order": order.id,
        "confirmation_sent": order.confirmation_sent,
        "total": None if order.total is None else str(order.total),
        "job_status": app.job(order.confirmation_job).status(),
        "result_status": str(result.status),
        "result_value": result.return_value if result.status == "SUCCESSFUL" else None,
        "attempts": result.attempts,
    })
