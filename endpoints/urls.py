from django.urls import path

from . import management_api, oauth, responses_api, views

urlpatterns = [
    path(".well-known/databricks-config", views.databricks_config),
    path("healthz", views.healthz),
    path("oidc/.well-known/oauth-authorization-server", oauth.discovery),
    path("oidc/v1/token", oauth.token),
    path("oidc/v1/authorize", oauth.authorize),
    path("serving-endpoints/chat/completions", views.chat_completions),
    path("serving-endpoints/completions", views.completions),
    path("serving-endpoints/embeddings", views.embeddings),
    path("serving-endpoints/models", views.models_list),
    path("serving-endpoints/responses", responses_api.responses),
    path("serving-endpoints/<str:name>/invocations", views.invocations),
    path("serving-endpoints/models/<path:model_id>", views.model_detail),
    # The management API: both forms of the collection answer (mlflow adds the slash; a redirect would break POST).
    path("api/2.0/serving-endpoints", management_api.collection),
    path("api/2.0/serving-endpoints/", management_api.collection),
    path("api/2.0/serving-endpoints/<str:name>", management_api.item),
    path("api/2.0/serving-endpoints/<str:name>/config", management_api.item_config),
    path("api/2.0/serving-endpoints/<str:name>/tags", management_api.item_tags),
    path("api/2.0/serving-endpoints/<str:name>/rate-limits", management_api.item_rate_limits),
    path("api/2.0/serving-endpoints/<str:name>/ai-gateway", management_api.item_ai_gateway),
]
