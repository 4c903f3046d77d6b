"""Browser pages: sign-in, access tokens, serving endpoints and their Query dialog."""
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import pages

app_name = "pages"

urlpatterns = [
    path("", pages.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="pages/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django ≥ 5)
    path("tokens/", pages.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", pages.revoke_token, name="revoke-token"),
    path("endpoints/", pages.endpoints, name="endpoints"),
    path("endpoints/<str:name>/", pages.endpoint_detail, name="endpoint"),
    path("endpoints/<str:name>/query", pages.query, name="query"),
    path("endpoints/<str:name>/model-state", pages.model_state, name="model-state"),
    path("endpoints/<str:name>/examples", pages.save_example, name="save-example"),
    path("endpoints/<str:name>/examples/<int:example_id>/delete", pages.delete_example, name="delete-example"),
    path("sql/", include("playground.sql")),  # the SQL page: names pages:sql, pages:sql-run, …
]
