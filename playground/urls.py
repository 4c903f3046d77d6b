from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("endpoints.urls")),
    path("", include("playground.urls_pages")),
    path("", include("playground.urls_playground")),
    path("admin/", admin.site.urls),
]

handler404 = "endpoints.views.handler404"
handler500 = "endpoints.views.handler500"
