"""Browser pages: sign-in, access tokens, serving endpoints and their Query dialog."""
urlpatterns: list = []
