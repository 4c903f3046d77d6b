from django.urls import path

from . import views

urlpatterns = [
    path(".well-known/databricks-config", views.databricks_config),
    path("healthz", views.healthz),
    path("serving-endpoints/chat/completions", views.chat_completions),
    path("serving-endpoints/completions", views.completions),
    path("serving-endpoints/embeddings", views.embeddings),
    path("serving-endpoints/models", views.models_list),
    path("serving-endpoints/<str:name>/invocations", views.invocations),
    path("serving-endpoints/models/<path:model_id>", views.model_detail),
]
