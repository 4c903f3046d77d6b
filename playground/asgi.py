"""ASGI entry point.

- WebSockets (the playground's streams) go through Channels, behind an origin check and the
  session's authentication.
- The token-authenticated APIs (``endpoints.views.API_PREFIXES``) go to a Django handler with no
  middleware: they use no session, cookie, CSRF token or message, and each of Django's sync
  middlewares costs two thread hops per request on the async path. They also skip the
  per-request ``ThreadSensitiveContext`` (a new worker thread for every request) and the two
  hops Django's handler makes for the request_started/finished signals: those receivers only
  tidy database connections, and the event loop's thread never opens one (the API's database
  work runs in ``sync_to_async`` helpers that release their connection themselves:
  ``endpoints.auth`` and ``endpoints.registry``). Measured with ``bench/gateway_cost.py``.
- Everything else (the admin, the pages, their static files) goes through Django with its full
  middleware; ``/static/`` is answered before it.
- Before any of them, the edge (playground/edge.py) bounds request bodies and checks an API
  request's token, or a page's session, before a large body is read.
"""
import asyncio
import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up first


class APIHandler(ASGIHandler):
    """Django's ASGI handler with ``settings.API_MIDDLEWARE`` and no per-request sync thread."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE; swap the list in while the chain is built
        # (once, at import, before the server takes requests).
        saved = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = saved

    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        """Django 5.2's ``ASGIHandler.handle`` with the signals sent inline (see the module doc)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=ASGIHandler, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the response was being sent
            return response

        # Whichever ends first: the response, or the client going away (which cancels the view,
        # and so stops a generation upstream).
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            signals.request_finished.send(sender=ASGIHandler)
        else:
            response.close()  # sends request_finished
        body_file.close()


from endpoints.views import API_PREFIXES  # noqa: E402
from playground.edge import BodyLimit, StaticFiles, install_daphne_guard  # noqa: E402
from playground.origin import SameOriginValidator  # noqa: E402
from playground.routing import websocket_urlpatterns  # noqa: E402

api_asgi_app = APIHandler()
# The pages' few small assets (CSS, JS, the vendored htmx) straight from the app and project
# static folders: daphne serves no files, and a self-hosted tool should need no proxy for them.
# Any path outside the static roots is a 404 (playground/edge.py).
pages_asgi_app = StaticFiles(django_asgi_app)


async def http_app(scope, receive, send) -> None:
    app = api_asgi_app if scope["path"].startswith(API_PREFIXES) else pages_asgi_app
    await app(scope, receive, send)


# Request bodies are bounded before they are read, and an API request's token (a page's session)
# is checked before a large body is (playground/edge.py): in daphne's own request object, which
# otherwise receives the whole body to a temporary file before the application runs, and in the
# ASGI chain for any server that streams bodies.
install_daphne_guard()


application = ProtocolTypeRouter(
    {
        "http": BodyLimit(http_app),
        # Signed-in sessions only (the consumer closes anonymous sockets with 4401), and only from
        # the site's own origin, scheme, host and port, or a trusted one (playground/origin.py): a
        # foreign page, or another app on another port of the same host, cannot ride the user's cookie.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# The embedded models load in the background once the server listens (FONDASI_WARMUP; endpoints/warmup.py).
from endpoints import warmup  # noqa: E402

warmup.start()

# What start-up built (modules, settings, URL patterns) lives as long as the process: keep it out
# of the garbage collector's full collections, which otherwise walk all of it every few hundred
# requests and pause the request that triggers them (bench/gateway_cost.py: the p99 at c=1).
gc.freeze()
