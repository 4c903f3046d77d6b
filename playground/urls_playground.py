"""The AI Playground's pages (its WebSocket routes are in playground/routing.py)."""
urlpatterns: list = []
