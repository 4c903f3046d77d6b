"""WebSocket routes (the AI Playground's streams arrive with a later issue)."""
websocket_urlpatterns: list = []
