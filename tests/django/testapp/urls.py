from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("note/", views.note_and_jobs),
    path("fail/", views.enqueue_then_fail),
    path("async/", views.async_enqueue),
]
