"""The browser pages (playground/pages.py): sign-in, access tokens, endpoints and the Query dialog."""
from __future__ import annotations

import html
import json
import textwrap

import pytest
from django.test import AsyncClient, Client

from endpoints.config import apply, parse_text
from endpoints.models import AccessToken, ExampleInput, ServingEndpoint, hash_token

CHAT = "local-smollm2-chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0}

SECRET_ENDPOINT = textwrap.dedent("""\
    endpoints:
      - name: vendor-chat
        task: llm/v1/chat
        description: behind a key
        served_entities:
          - name: vendor-model
            external_model:
              name: some-model
              provider: openai-compatible
              openai_config:
                openai_api_base: "https://user:hunter2@vendor.example/v1?api-key=abc"
                openai_api_key_plaintext: sk-supersecret-123456
    """)


@pytest.fixture
def signed_in(client: Client, alice, default_endpoints) -> Client:
    client.force_login(alice)
    return client


def page_text(response) -> str:
    """The page as a reader sees it (entities decoded): what a snippet would be copied as."""
    return html.unescape(response.content.decode())


def post_json(client: Client, url: str, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


# --- sign-in ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/endpoints/", f"/endpoints/{CHAT}/", "/tokens/"])
def test_it_sends_anonymous_visitors_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/tokens/", "/tokens/1/revoke", f"/endpoints/{CHAT}/examples"])
def test_it_refuses_anonymous_posts(client, url):
    response = client.post(url, {"name": "x", "body": "{}"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_it_answers_an_anonymous_query_with_a_json_401(client, default_endpoints):
    response = post_json(client, f"/endpoints/{CHAT}/query", HELLO)
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


@pytest.mark.django_db
def test_it_redirects_home_to_the_endpoints(client):
    assert client.get("/")["Location"] == "/endpoints/"


def test_it_signs_in_and_out(client, alice):
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post("/login/", {"username": "alice", "password": "wonderland-42"})
    assert response.status_code == 302 and response["Location"] == "/endpoints/"
    assert client.get("/tokens/").status_code == 200
    assert client.post("/logout/")["Location"] == "/login/"
    assert client.get("/tokens/").status_code == 302


def test_it_says_when_the_password_is_wrong(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode().lower()


# --- access tokens ----------------------------------------------------------------------------


def test_it_shows_a_new_token_once_and_stores_only_its_hash(signed_in, alice):
    response = signed_in.post("/tokens/", {"name": "my-laptop"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = AccessToken.objects.get(user=alice, name="my-laptop")
    value = next(word for word in page_text(response).replace('"', " ").split() if word.startswith("dapi"))
    assert token.token_hash == hash_token(value)
    assert value not in [getattr(token, f.attname) for f in AccessToken._meta.fields]
    listing = signed_in.get("/tokens/").content.decode()
    assert "my-laptop" in listing and token.hint in listing
    assert value not in listing


def test_it_asks_for_a_token_name(signed_in, alice):
    response = signed_in.post("/tokens/", {"name": "  "})
    assert response.status_code == 400 and "Give the token a name." in response.content.decode()
    assert not AccessToken.objects.filter(user=alice).exists()


def test_it_revokes_a_token_and_the_api_refuses_it(signed_in, alice):
    token, value = AccessToken.issue(alice, "ci")
    api = {"HTTP_AUTHORIZATION": f"Bearer {value}"}
    assert signed_in.get("/serving-endpoints/models", **api).status_code == 200
    response = signed_in.post(f"/tokens/{token.pk}/revoke", follow=True)
    assert response.status_code == 200 and "is revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    refused = signed_in.get("/serving-endpoints/models", **api)
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"


def test_it_neither_lists_nor_revokes_other_peoples_tokens(signed_in, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="builder-42")
    theirs, _ = AccessToken.issue(bob, "bobs-secret-token")
    assert "bobs-secret-token" not in signed_in.get("/tokens/").content.decode()
    assert signed_in.post(f"/tokens/{theirs.pk}/revoke").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_revoking_needs_a_post(signed_in, alice):
    token, _ = AccessToken.issue(alice, "ci")
    assert signed_in.get(f"/tokens/{token.pk}/revoke").status_code == 405


# --- endpoint list ----------------------------------------------------------------------------


def test_it_lists_every_endpoint_with_task_entities_and_state(signed_in):
    body = signed_in.get("/endpoints/").content.decode()
    for name in ("local-smollm2-chat", "local-smollm2-completions", "local-minilm-embeddings"):
        assert f'href="/endpoints/{name}/"' in body
    assert "llm/v1/embeddings" in body and "local · all-minilm-l6-v2" in body and "Ready" in body
    assert 'hx-trigger="input changed delay:200ms' in body


def test_it_filters_by_task_with_only_the_partial_for_htmx(signed_in):
    response = signed_in.get("/endpoints/", {"task": "llm/v1/embeddings"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "<html" not in body and "<table" in body
    assert "local-minilm-embeddings" in body and "local-smollm2-chat" not in body
    assert "HX-Request" in response["Vary"]


def test_it_filters_by_text_in_name_description_or_model(signed_in):
    body = signed_in.get("/endpoints/", {"q": "COMPLETION"}, HTTP_HX_REQUEST="true").content.decode()
    assert "local-smollm2-completions" in body and "local-minilm-embeddings" not in body
    body = signed_in.get("/endpoints/", {"q": "minilm"}).content.decode()
    assert "<html" in body and "local-minilm-embeddings" in body and "local-smollm2-chat" not in body


def test_it_says_when_nothing_matches_and_escapes_the_query(signed_in):
    body = signed_in.get("/endpoints/", {"q": "<b>xyz"}, HTTP_HX_REQUEST="true").content.decode()
    assert "No endpoints match “&lt;b&gt;xyz”" in body and "<b>xyz" not in body


# --- endpoint detail --------------------------------------------------------------------------


def test_it_masks_secrets_in_the_provider_config(signed_in):
    apply(parse_text(SECRET_ENDPOINT))
    response = signed_in.get("/endpoints/vendor-chat/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "sk-supersecret-123456" not in body and "supersecret" not in body
    assert "••••3456" in body
    assert "hunter2" not in body and "api-key=abc" not in body
    # The API and the admin show the same (endpoints/masking.py): host, path, the userinfo's user.
    assert "https://user:••••@vendor.example/v1?api-key=••••" in body


def test_it_shows_metadata_and_example_inputs(signed_in):
    body = page_text(signed_in.get("/endpoints/local-minilm-embeddings/"))
    assert "embedding dimension" in body and "384" in body and "normalized" in body
    assert "Two sentences" in body and "a cat sat on the mat" in body


def test_its_code_samples_name_the_endpoint_and_the_host(signed_in):
    body = page_text(signed_in.get(f"/endpoints/{CHAT}/", HTTP_HOST="localhost"))
    host = "http://localhost"
    assert f"-u token:$DATABRICKS_TOKEN" in body and f"{host}/serving-endpoints/{CHAT}/invocations" in body
    assert f'base_url="{host}/serving-endpoints"' in body and f'model="{CHAT}"' in body
    assert f'WorkspaceClient(host="{host}"' in body and "ChatMessage(role=ChatMessageRole.USER" in body
    assert 'get_deploy_client("databricks")' in body and f'endpoint="{CHAT}"' in body
    assert f'ChatDatabricks(endpoint="{CHAT}"' in body
    assert f"SELECT ai_query('{CHAT}', 'What is a mixture of experts model?')" in body


def test_its_code_samples_follow_the_task(signed_in):
    body = page_text(signed_in.get("/endpoints/local-minilm-embeddings/"))
    assert "client.embeddings.create(" in body and "DatabricksEmbeddings(endpoint=" in body
    assert 'input=["a cat sat on the mat"]' in body and "messages=" not in body.split("Call this endpoint")[1].split("<dialog")[0]
    body = page_text(signed_in.get("/endpoints/local-smollm2-completions/"))
    assert "client.completions.create(" in body and 'prompt="The three primary colours are"' in body


def test_it_says_when_an_endpoint_does_not_exist(signed_in):
    response = signed_in.get("/endpoints/no-such-thing/")
    assert response.status_code == 404 and "No endpoint named “no-such-thing”" in response.content.decode()


# --- the Query dialog's view ------------------------------------------------------------------


def without_ids(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def test_it_answers_a_query_exactly_as_the_api_does(signed_in, token):
    mine = post_json(signed_in, f"/endpoints/{CHAT}/query", HELLO)
    theirs = post_json(signed_in, f"/serving-endpoints/{CHAT}/invocations", HELLO,
                       HTTP_AUTHORIZATION=f"Bearer {token}")
    assert mine.status_code == theirs.status_code == 200
    assert mine["Content-Type"] == "application/json"
    assert mine["served-model-name"] == theirs["served-model-name"]
    assert without_ids(mine.json()) == without_ids(theirs.json())
    assert mine.json()["object"] == "chat.completion" and mine.json()["usage"]["completion_tokens"] <= 4


def test_it_answers_bad_json_with_the_api_error_body(signed_in):
    response = post_json(signed_in, f"/endpoints/{CHAT}/query", '{"messages": [')
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "not valid JSON" in response.json()["message"]


def test_it_answers_bad_parameters_with_the_api_error_body(signed_in):
    response = post_json(signed_in, f"/endpoints/{CHAT}/query", {**HELLO, "temperature": 5})
    assert response.status_code == 400 and "temperature" in response.json()["message"]


def test_it_answers_an_unknown_endpoint_with_404(signed_in):
    response = post_json(signed_in, "/endpoints/nope/query", HELLO)
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_the_query_view_needs_the_csrf_token(alice, default_endpoints):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert post_json(client, f"/endpoints/{CHAT}/query", HELLO).status_code == 403


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_streams_server_sent_events(alice, default_endpoints):
    # In-process ASGI, as a browser's fetch() reads it: the stream is consumed on the view's loop.
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.post(f"/endpoints/{CHAT}/query", data=json.dumps({**HELLO, "stream": True}),
                                 content_type="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert raw.startswith("data: {") and raw.endswith("data: [DONE]\n\n")
    assert '"chat.completion.chunk"' in raw


# --- example inputs ---------------------------------------------------------------------------


def test_it_saves_the_request_as_an_example_and_lists_it(signed_in, alice):
    body = {"messages": [{"role": "user", "content": "Hi <script>"}], "max_tokens": 4}
    response = signed_in.post(f"/endpoints/{CHAT}/examples", {"name": "Greeting", "body": json.dumps(body)},
                              HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    example = ExampleInput.objects.get(endpoint__name=CHAT, name="Greeting")
    assert example.body == body and example.source == "user" and example.created_by == alice
    partial = response.content.decode()
    assert 'id="examples"' in partial and 'hx-swap-oob="true"' in partial and "Saved “Greeting”" in partial
    assert "<script>" not in partial.replace('<script id="examples-data" type="application/json">', "")
    assert "Greeting" in signed_in.get(f"/endpoints/{CHAT}/").content.decode()


@pytest.mark.parametrize("body,problem", [
    ('["a list"]', "must be a JSON object"),
    ("42", "must be a JSON object"),
    ("{oops", "not valid JSON"),
])
def test_it_refuses_to_save_an_example_that_is_not_a_json_object(signed_in, body, problem):
    response = signed_in.post(f"/endpoints/{CHAT}/examples", {"name": "Bad", "body": body}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422 and problem in response.content.decode()
    assert response["HX-Retarget"] == "#save-example-status"
    assert not ExampleInput.objects.filter(name="Bad").exists()


def test_an_example_larger_than_the_limit_is_refused_naming_both_sizes(signed_in, settings):
    settings.EXAMPLE_MAX_BYTES = 1024
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]}, indent=2)
    response = signed_in.post(f"/endpoints/{CHAT}/examples", {"name": "Big", "body": body}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422 and response["HX-Retarget"] == "#save-example-status"
    assert ("The request is 2.0 KiB; an example may be at most 1.0 KiB (FONDASI_EXAMPLE_MAX_BYTES). "
            "Save a shorter one.") in response.content.decode()
    assert not ExampleInput.objects.filter(name="Big").exists()


def test_an_endpoint_keeps_at_most_the_examples_limit(signed_in, settings):
    settings.EXAMPLES_PER_ENDPOINT = ExampleInput.objects.filter(endpoint__name=CHAT).count() + 1
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}]})
    assert signed_in.post(f"/endpoints/{CHAT}/examples", {"name": "One more", "body": body},
                          HTTP_HX_REQUEST="true").status_code == 200
    response = signed_in.post(f"/endpoints/{CHAT}/examples", {"name": "Too many", "body": body}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert (f"This endpoint already has {settings.EXAMPLES_PER_ENDPOINT} examples, the most it keeps "
            "(FONDASI_EXAMPLES_PER_ENDPOINT): delete one before saving another.") in response.content.decode()
    assert not ExampleInput.objects.filter(name="Too many").exists()


def test_only_the_author_deletes_a_saved_example(signed_in, alice, django_user_model):
    endpoint = ServingEndpoint.objects.get(name=CHAT)
    bob = django_user_model.objects.create_user("bob", password="builder-42")
    theirs = ExampleInput.objects.create(endpoint=endpoint, name="Bob's", body={}, created_by=bob)
    mine = ExampleInput.objects.create(endpoint=endpoint, name="Mine", body={}, created_by=alice)
    assert signed_in.post(f"/endpoints/{CHAT}/examples/{theirs.pk}/delete").status_code == 403
    assert signed_in.post(f"/endpoints/{CHAT}/examples/{mine.pk}/delete").status_code == 302
    assert list(ExampleInput.objects.filter(source="user")) == [theirs]
    from_file = ExampleInput.objects.filter(source="yaml").first()
    assert signed_in.post(f"/endpoints/{CHAT}/examples/{from_file.pk}/delete").status_code == 404


WITH_EXAMPLES = textwrap.dedent("""\
    endpoints:
      - name: chat-x
        task: llm/v1/chat
        served_entities:
          - foundation_model: {name: smollm2-135m-instruct}
        examples:
          - name: First
            body: {messages: [{role: user, content: "Hi"}], max_tokens: 8}
          - name: Second
            body: {messages: [{role: user, content: "Bye"}]}
    """)


@pytest.mark.django_db
def test_yaml_examples_load_and_applying_again_changes_nothing(alice):
    assert apply(parse_text(WITH_EXAMPLES)).added == ["chat-x"]
    endpoint = ServingEndpoint.objects.get(name="chat-x")
    assert [(x.name, x.source) for x in endpoint.examples.all()] == [("First", "yaml"), ("Second", "yaml")]
    ExampleInput.objects.create(endpoint=endpoint, name="Mine", body={"messages": []}, created_by=alice)
    again = apply(parse_text(WITH_EXAMPLES))
    assert again.unchanged == ["chat-x"] and not again.changed
    edited = apply(parse_text(WITH_EXAMPLES.replace("name: Second", "name: Later").replace('"Bye"', '"Later"')))
    assert edited.changed == ["chat-x"]
    assert [(x.name, x.source) for x in endpoint.examples.all()] == [("First", "yaml"), ("Later", "yaml"), ("Mine", "user")]


def test_a_yaml_example_the_endpoint_would_refuse_names_its_line():
    from endpoints.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_text(WITH_EXAMPLES.replace('{messages: [{role: user, content: "Bye"}]}', '{prompt: "Bye"}'))
    assert info.value.line == 10 and "Second" in info.value.problem and "completions" in info.value.problem


# --- the embedded models' warm-up and loading state (issue 11, item 10) -----------------------


def model_state(client: Client, name: str = CHAT) -> dict:
    response = client.get(f"/endpoints/{name}/model-state")
    assert response.status_code == 200
    return response.json()


@pytest.mark.django_db
def test_it_says_the_embedded_model_is_loading_until_its_first_request_loads_it(signed_in):
    from endpoints.providers.local import shutdown_runtimes

    shutdown_runtimes()  # as after a start: nothing loaded
    assert model_state(signed_in) == {"loading": True}
    assert post_json(signed_in, f"/endpoints/{CHAT}/query", HELLO).status_code == 200
    assert model_state(signed_in) == {"loading": False}


@pytest.mark.django_db
def test_an_external_endpoints_model_is_never_loading_and_an_unknown_one_is_a_404(signed_in):
    apply(parse_text(SECRET_ENDPOINT))
    assert model_state(signed_in, "vendor-chat") == {"loading": False}
    response = signed_in.get("/endpoints/nope/model-state")
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.django_db
def test_the_warm_up_is_off_unless_turned_on():
    from endpoints import warmup

    assert warmup.start() is False  # FONDASI_WARMUP is off by default, so in the tests


@pytest.mark.django_db(transaction=True)
def test_the_warm_up_loads_the_served_models_in_the_background(client, alice, default_endpoints, settings):
    import time

    from endpoints import warmup
    from endpoints.providers.local import shutdown_runtimes

    client.force_login(alice)
    shutdown_runtimes()
    settings.WARMUP = True
    assert warmup.served_local_models() == ["smollm2-135m-instruct", "all-minilm-l6-v2"]
    started = time.monotonic()
    assert warmup.start(delay=0) is True  # returns at once: the weights load in another thread
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 120
    while model_state(client) != {"loading": False} or model_state(client, "local-minilm-embeddings") != {"loading": False}:
        assert time.monotonic() < deadline, "the warm-up did not load the models"
        time.sleep(0.2)
    assert warmup.start(delay=0) is False  # once per process


# --- Get code (issue 11, item 12) -------------------------------------------------------------


def get_code(client: Client, **body) -> str:
    response = post_json(client, "/playground/code", {"endpoint": CHAT, **body})
    assert response.status_code == 200
    return page_text(response)


@pytest.mark.django_db
def test_get_code_never_invents_a_prompt_for_an_empty_one(signed_in):
    code = get_code(signed_in, prompt="")
    assert "Hello!" not in code
    assert "'content': '<your prompt>'" in code and '"content": "<your prompt>"' in code  # Python, curl


@pytest.mark.django_db
def test_get_code_names_the_token_as_the_endpoint_page_and_the_readme_do(signed_in):
    from django.conf import settings

    code = get_code(signed_in, prompt="Why?")
    assert 'os.environ["DATABRICKS_TOKEN"]' in code and "token:$DATABRICKS_TOKEN" in code
    assert '"TOKEN"' not in code and "$TOKEN " not in code
    page = page_text(signed_in.get(f"/endpoints/{CHAT}/"))
    assert 'os.environ["DATABRICKS_TOKEN"]' in page and "token:$DATABRICKS_TOKEN" in page
    readme = (settings.BASE_DIR / "README.md").read_text()
    assert 'os.environ["TOKEN"]' not in readme and "$TOKEN" not in readme
    assert 'os.environ["DATABRICKS_TOKEN"]' in readme


@pytest.mark.django_db
def test_get_code_indents_by_four_spaces_and_has_copy_buttons(signed_in):
    code = get_code(signed_in, prompt="Why?", system="Be brief.",
                    params={"temperature": 0.5, "max_tokens": 32, "thinking": True, "budget_tokens": 16})
    assert ("    messages=[\n"
            "        {\n"
            "            'role': 'system',\n"
            "            'content': 'Be brief.',\n"
            "        },\n") in code
    assert "    temperature=0.5,\n    max_tokens=32,\n" in code
    assert ("    extra_body={\n"
            "        'thinking': {\n"
            "            'type': 'enabled',\n") in code
    assert code.count('class="copy" data-copy=') == 2
