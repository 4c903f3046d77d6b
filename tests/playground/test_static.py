"""The pages' assets come from the live server itself (daphne, DEBUG off), as `make run` serves them."""
import httpx
import pytest


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/static/css/base.css", "text/css"), ("/static/js/playground.js", "javascript"),
     ("/static/django_htmx/htmx-2.min.js", "javascript")],
)
def test_the_server_serves_the_pages_assets(fondasi_server, path, kind):
    response = httpx.get(fondasi_server.url + path)
    assert response.status_code == 200 and kind in response.headers["content-type"]


def test_an_unknown_asset_is_a_404(fondasi_server):
    assert httpx.get(fondasi_server.url + "/static/nope.css").status_code == 404
