"""Views that write a row and enqueue in one transaction, both ways."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Note
from .tasks import add, dj_add


def note_and_jobs(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    with transaction.atomic():
        note = Note.objects.create(text=body.get("text", "hello"))
        job = add.enqueue(note.id, 1)
        result = dj_add.enqueue(note.id, 2)
        if body.get("fail"):
            raise RuntimeError("the view fails after enqueueing")
    return JsonResponse({"note": note.id, "job": job.id, "result": result.id})


def enqueue_then_fail(request: HttpRequest) -> JsonResponse:
    """No atomic() of its own: with ATOMIC_REQUESTS the request's transaction decides."""
    note = Note.objects.create(text="enqueue_then_fail")
    add.enqueue(note.id, 1)
    dj_add.enqueue(note.id, 2)
    raise RuntimeError("the view fails after enqueueing")


@transaction.non_atomic_requests
async def async_enqueue(request: HttpRequest) -> JsonResponse:
    result = await dj_add.aenqueue(20, 22)

    @sync_to_async
    def write_and_enqueue() -> tuple[int, str]:
        with transaction.atomic():
            note = Note.objects.create(text="async")
            return note.id, dj_add.enqueue(note.id, 0).id

    note_id, second = await write_and_enqueue()
    fetched = await dj_add.aget_result(result.id)
    return JsonResponse({"result": result.id, "status": str(fetched.status), "note": note_id,
                         "second": second})
