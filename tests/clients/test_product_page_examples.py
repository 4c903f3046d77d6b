"""Every code example of the product page ("Menggunakan model fondasi", shared/seed/), run against a
live Fondasi with only the host, the token and the endpoint names changed.

Each test quotes the example it ports. The page's endpoints become these:

- ``databricks-meta-llama-3-3-70b-instruct`` (chat) → ``local-smollm2-chat``;
- ``anthropic-completions-endpoint`` / ``<completions-model-endpoint>`` → ``local-smollm2-completions``;
- ``databricks-gte-large-en`` (embeddings) → ``local-minilm-embeddings``;
- ``databricks-claude-3-7-sonnet`` (reasoning, vision) → ``page-claude``, an external model served by
  a Databricks workspace (provider ``databricks-model-serving``) that is a fake on 127.0.0.1 answering
  with Claude's reasoning blocks: no embedded model reasons over a 10,240-token budget in a test.

The vision examples download their pictures from Wikimedia: here the same code downloads them from a
picture host on 127.0.0.1. Not ported, because they are no code to run against a server: the
installation lines (``!pip install databricks-sdk[openai]>=0.35.0``, ``!pip install mlflow``,
``%pip install databricks-langchain``, ``dbutils.library.restartPython()``); the test environment
installs those packages (requirements-test.txt).

The page's slips are kept where the code still runs (the second vision example downloads
``image1_url`` twice) and worked around where it cannot: ``import os`` is missing in the reasoning
example, the mlflow chat and embeddings examples put shell ``export`` lines in Python (the variables
are set instead), the follow-up reasoning examples use ``text_content`` and ``client`` from the first,
and ``ChatDatabricks(endpoint_name=...)`` is refused by databricks-langchain itself (its parameter is
``endpoint``; see :func:`test_langchain_chat`).
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Iterator

import httpx
import mlflow.deployments
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image
from pydantic import ValidationError

from tests.clients.conftest import LOCAL_CHAT, LOCAL_COMPLETIONS, LOCAL_EMBEDDINGS, management, manage
from tests.fakes.openai_upstream import FakeOpenAIUpstream

REASONING = "The question is asking about the scientific explanation for why the sky appears blue... "
SIGNATURE = "EqoBCkgIARABGAIiQAhCWRmlaLuPiHaF357JzGmloqLqkeBm3cHG9NFTxKMyC"
ANSWER = "# Why the Sky Is Blue\n\nThe sky appears blue because of a phenomenon called Rayleigh scattering."

pytestmark = pytest.mark.filterwarnings("ignore:get_open_ai_client:DeprecationWarning")


@pytest.fixture(scope="module")
def claude_workspace() -> Iterator[FakeOpenAIUpstream]:
    """The fake Databricks workspace behind ``page-claude``: it reasons, then answers, in content blocks."""
    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def claude(claude_workspace, fondasi_server) -> Iterator[FakeOpenAIUpstream]:
    """Endpoint ``page-claude`` served by ``claude_workspace``, answering with reasoning blocks."""
    claude_workspace.reset()
    claude_workspace.requests.clear()
    claude_workspace.content_blocks = True
    claude_workspace.reasoning_pieces = [REASONING]
    claude_workspace.reasoning_signature = SIGNATURE
    claude_workspace.pieces = [ANSWER]
    config = {"databricks_workspace_url": claude_workspace.url, "databricks_api_token_plaintext": "dapi-remote"}
    # A remote workspace's model is unknown to us: that this one (Claude) sees images is said here.
    entity = {"name": "claude", "vision": True,
              "external_model": {"name": "databricks-claude-3-7-sonnet", "task": "llm/v1/chat",
                                 "provider": "databricks-model-serving", "databricks_model_serving_config": config}}
    created = management(fondasi_server, "POST", "", {"name": "page-claude", "config": {"served_entities": [entity]}})
    assert created.status_code == 200, created.text
    yield claude_workspace
    management(fondasi_server, "DELETE", "/page-claude")


class _Pictures(BaseHTTPRequestHandler):
    """Serves a JPEG the size of Wikimedia's (2560 px wide) at any path."""

    def do_GET(self) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (2560, 1707), (90, 140, 60)).save(buffer, "JPEG")
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(buffer.tell()))
        self.end_headers()
        self.wfile.write(buffer.getvalue())

    def log_message(self, format: str, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def picture_host() -> Iterator[str]:
    """Where the vision examples download their pictures from (instead of upload.wikimedia.org)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def curl(*args: str) -> dict:
    """Run the page's curl command; its JSON answer."""
    done = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "120", *args],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def sql(server, text: str) -> list[dict]:
    """Run the page's SQL with ``python manage.py sql`` on the live server's database; the rows."""
    out = server.log.parent / "page-sql.json"
    manage(server, "sql", text, "--json", str(out))
    return json.loads(out.read_text())


def only_value(rows: list[dict]):
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return next(iter(rows[0].values()))


# --- Permintaan model pelengkapan teks (completions) -------------------------------------------------


def test_completions_with_the_openai_client_of_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    #
    # w = WorkspaceClient()
    # openai_client = w.serving_endpoints.get_open_ai_client()
    #
    # completion = openai_client.completions.create(
    # model="anthropic-completions-endpoint",
    # prompt="what is databricks",
    # temperature=1.0
    # )
    # print(completion)
    from databricks.sdk import WorkspaceClient

    w = WorkspaceClient()
    openai_client = w.serving_endpoints.get_open_ai_client()

    completion = openai_client.completions.create(
        model=LOCAL_COMPLETIONS,
        prompt="what is databricks",
        temperature=1.0
    )
    print(completion)
    assert completion.object == "text_completion" and completion.choices[0].text.strip()


def test_completions_with_sql(fondasi_server):
    # SELECT ai_query(
    #     "<completions-model-endpoint>",
    #     "Can you explain AI in ten words?"
    #   )
    rows = sql(fondasi_server, f"""SELECT ai_query(
    "{LOCAL_COMPLETIONS}",
    "Can you explain AI in ten words?"
  )""")
    assert isinstance(only_value(rows), str)  # the text of the first choice (SmolLM2 may end at once: "")


def test_completions_with_curl(fondasi_server):
    # curl \
    # -u token:$DATABRICKS_TOKEN \
    # -X POST \
    # -H "Content-Type: application/json" \
    # -d '{"prompt": "What is a quoll?", "max_tokens": 64}' \
    # https://<workspace_host>.databricks.com/serving-endpoints/<completions-model-endpoint>/invocations
    answer = curl(
        "-u", f"token:{fondasi_server.token}",
        "-X", "POST",
        "-H", "Content-Type: application/json",
        "-d", '{"prompt": "What is a quoll?", "max_tokens": 64}',
        f"{fondasi_server.url}/serving-endpoints/{LOCAL_COMPLETIONS}/invocations",
    )
    # SmolLM2-135M often ends a completion at once after a question (text ""): the shape is the check.
    assert answer["object"] == "text_completion" and isinstance(answer["choices"][0]["text"], str)
    assert answer["choices"][0]["finish_reason"] in ("stop", "length") and answer["usage"]["completion_tokens"] <= 64


def test_completions_with_mlflow(databricks_env):
    # import os
    # import mlflow.deployments
    #
    # # Only required when running this example outside of a Databricks Notebook
    #
    # os.environ['DATABRICKS_HOST'] = "https://<workspace_host>.databricks.com"
    # os.environ['DATABRICKS_TOKEN'] = "dapi-your-databricks-token"
    #
    # client = mlflow.deployments.get_deploy_client("databricks")
    #
    # completions_response = client.predict(
    #     endpoint="<completions-model-endpoint>",
    #     inputs={
    #         "prompt": "What is the capital of France?",
    #         "temperature": 0.1,
    #         "max_tokens": 10,
    #         "n": 2
    #     }
    # )
    #
    # # Print the response
    # print(completions_response)
    # (databricks_env's monkeypatch restores both variables after the test)
    os.environ['DATABRICKS_HOST'] = databricks_env.url
    os.environ['DATABRICKS_TOKEN'] = databricks_env.token

    client = mlflow.deployments.get_deploy_client("databricks")

    completions_response = client.predict(
        endpoint=LOCAL_COMPLETIONS,
        inputs={
            "prompt": "What is the capital of France?",
            "temperature": 0.1,
            "max_tokens": 10,
            "n": 2
        }
    )

    # Print the response
    print(completions_response)
    assert [c["index"] for c in completions_response["choices"]] == [0, 1]
    assert all(isinstance(c["text"], str) and c["finish_reason"] for c in completions_response["choices"])
    assert completions_response["usage"]["completion_tokens"] <= 2 * 10


def test_completions_with_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    # from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
    #
    # w = WorkspaceClient()
    # response = w.serving_endpoints.query(
    #     name="<completions-model-endpoint>",
    #     prompt="Write 3 reasons why you should train an AI model on domain specific data sets."
    # )
    # print(response.choices[0].text)
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ChatMessage, ChatMessageRole  # noqa: F401 (as on the page)

    w = WorkspaceClient()
    response = w.serving_endpoints.query(
        name=LOCAL_COMPLETIONS,
        prompt="Write 3 reasons why you should train an AI model on domain specific data sets."
    )
    print(response.choices[0].text)
    # The embedded model used to end at once on this prompt (text ""): an answer now has at least
    # one token (min_tokens defaults to 1), whatever is sampled.
    assert response.choices[0].text and response.usage.completion_tokens >= 1
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 10


def test_the_completions_request_and_response_formats(fondasi_server):
    # {
    #   "prompt": "What is mlflow?",
    #   "max_tokens": 100,
    #   "temperature": 0.1,
    #   "stop": [
    #     "Human:"
    #   ],
    #   "n": 1,
    #   "stream": false,
    #   "extra_params":
    #   {
    #     "top_p": 0.9
    #   }
    # }
    # ... and the expected response: {"id", "object": "text_completion", "created", "model",
    # "choices": [{"text", "index": 0, "logprobs": null, "finish_reason": "stop"}],
    # "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
    request = {"prompt": "What is mlflow?", "max_tokens": 100, "temperature": 0.1, "stop": ["Human:"], "n": 1,
               "stream": False, "extra_params": {"top_p": 0.9}}
    answer = httpx.post(f"{fondasi_server.url}/serving-endpoints/{LOCAL_COMPLETIONS}/invocations", json=request,
                        headers={"Authorization": f"Bearer {fondasi_server.token}"}, timeout=120).json()
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(answer)
    assert answer["object"] == "text_completion" and isinstance(answer["created"], int)
    [choice] = answer["choices"]
    assert {"text", "index", "logprobs", "finish_reason"} <= set(choice) and choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length") and "Human:" not in choice["text"]
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 100


# --- Kueri model pemenuhan percakapan (chat) -------------------------------------------------------


def test_chat_with_the_openai_client_of_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    #
    # w = WorkspaceClient()
    # openai_client = w.serving_endpoints.get_open_ai_client()
    #
    # response = openai_client.chat.completions.create(
    #     model="databricks-meta-llama-3-3-70b-instruct",
    #     messages=[
    #       {
    #         "role": "system",
    #         "content": "You are a helpful assistant."
    #       },
    #       {
    #         "role": "user",
    #         "content": "What is a mixture of experts model?",
    #       }
    #     ],
    #     max_tokens=256
    # )
    from databricks.sdk import WorkspaceClient

    w = WorkspaceClient()
    openai_client = w.serving_endpoints.get_open_ai_client()

    response = openai_client.chat.completions.create(
        model=LOCAL_CHAT,
        messages=[
          {
            "role": "system",
            "content": "You are a helpful assistant."
          },
          {
            "role": "user",
            "content": "What is a mixture of experts model?",
          }
        ],
        max_tokens=256
    )
    assert response.choices[0].message.content.strip() and response.usage.completion_tokens <= 256


def test_chat_with_the_openai_client(fondasi_server):
    # import os
    # import openai
    # from openai import OpenAI
    #
    # client = OpenAI(
    #     api_key="dapi-your-databricks-token",
    #     base_url="https://example.staging.cloud.databricks.com/serving-endpoints"
    # )
    #
    # response = client.chat.completions.create(
    #     model="databricks-meta-llama-3-3-70b-instruct",
    #     messages=[ {"role": "system", "content": "You are a helpful assistant."},
    #                {"role": "user", "content": "What is a mixture of experts model?"} ],
    #     max_tokens=256
    # )
    client = OpenAI(
        api_key=fondasi_server.token,
        base_url=f"{fondasi_server.url}/serving-endpoints"
    )

    response = client.chat.completions.create(
        model=LOCAL_CHAT,
        messages=[
          {
            "role": "system",
            "content": "You are a helpful assistant."
          },
          {
            "role": "user",
            "content": "What is a mixture of experts model?",
          }
        ],
        max_tokens=256
    )
    assert response.choices[0].message.role == "assistant" and response.choices[0].message.content.strip()


def test_chat_with_sql(fondasi_server):
    # SELECT ai_query(
    #     "databricks-meta-llama-3-3-70b-instruct",
    #     "Can you explain AI in ten words?"
    #   )
    rows = sql(fondasi_server, f"""SELECT ai_query(
    "{LOCAL_CHAT}",
    "Can you explain AI in ten words?"
  )""")
    assert only_value(rows).strip()


def test_chat_with_curl(fondasi_server):
    # curl \
    # -u token:$DATABRICKS_TOKEN \
    # -X POST \
    # -H "Content-Type: application/json" \
    # -d '{
    #   "messages": [
    #     {
    #       "role": "system",
    #       "content": "You are a helpful assistant."
    #     },
    #     {
    #       "role": "user",
    #       "content": " What is a mixture of experts model?"
    #     }
    #   ]
    # }' \
    # https://<workspace_host>.databricks.com/serving-endpoints/databricks-meta-llama-3-3-70b-instruct/invocations \
    answer = curl(
        "-u", f"token:{fondasi_server.token}",
        "-X", "POST",
        "-H", "Content-Type: application/json",
        "-d", """{
  "messages": [
    {
      "role": "system",
      "content": "You are a helpful assistant."
    },
    {
      "role": "user",
      "content": " What is a mixture of experts model?"
    }
  ]
}""",
        f"{fondasi_server.url}/serving-endpoints/{LOCAL_CHAT}/invocations",
    )
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"].strip()


def test_chat_with_mlflow(databricks_env):
    # import mlflow.deployments
    #
    # # Only required when running this example outside of a Databricks Notebook
    # export DATABRICKS_HOST="https://<workspace_host>.databricks.com"
    # export DATABRICKS_TOKEN="dapi-your-databricks-token"
    #
    # client = mlflow.deployments.get_deploy_client("databricks")
    #
    # chat_response = client.predict(
    #     endpoint="databricks-meta-llama-3-3-70b-instruct",
    #     inputs={
    #         "messages": [
    #             {
    #               "role": "user",
    #               "content": "Hello!"
    #             },
    #             {
    #               "role": "assistant",
    #               "content": "Hello! How can I assist you today?"
    #             },
    #             {
    #               "role": "user",
    #               "content": "What is a mixture of experts model??"
    #             }
    #         ],
    #         "temperature": 0.1,
    #         "max_tokens": 20
    #     }
    # )
    client = mlflow.deployments.get_deploy_client("databricks")

    chat_response = client.predict(
        endpoint=LOCAL_CHAT,
        inputs={
            "messages": [
                {
                  "role": "user",
                  "content": "Hello!"
                },
                {
                  "role": "assistant",
                  "content": "Hello! How can I assist you today?"
                },
                {
                  "role": "user",
                  "content": "What is a mixture of experts model??"
                }
            ],
            "temperature": 0.1,
            "max_tokens": 20
        }
    )
    assert chat_response["choices"][0]["message"]["content"].strip()
    assert chat_response["usage"]["completion_tokens"] <= 20


def test_chat_with_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    # from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
    #
    # w = WorkspaceClient()
    # response = w.serving_endpoints.query(
    #     name="databricks-meta-llama-3-3-70b-instruct",
    #     messages=[
    #         ChatMessage(
    #             role=ChatMessageRole.SYSTEM, content="You are a helpful assistant."
    #         ),
    #         ChatMessage(
    #             role=ChatMessageRole.USER, content="What is a mixture of experts model?"
    #         ),
    #     ],
    #     max_tokens=128,
    # )
    # print(f"RESPONSE:\n{response.choices[0].message.content}")
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ChatMessage, ChatMessageRole

    w = WorkspaceClient()
    response = w.serving_endpoints.query(
        name=LOCAL_CHAT,
        messages=[
            ChatMessage(
                role=ChatMessageRole.SYSTEM, content="You are a helpful assistant."
            ),
            ChatMessage(
                role=ChatMessageRole.USER, content="What is a mixture of experts model?"
            ),
        ],
        max_tokens=128,
    )
    print(f"RESPONSE:\n{response.choices[0].message.content}")
    assert response.choices[0].message.content.strip()


def test_langchain_chat(databricks_env):
    # from langchain_core.messages import HumanMessage, SystemMessage
    # from databricks_langchain import ChatDatabricks
    #
    # messages = [
    #     SystemMessage(content="You're a helpful assistant"),
    #     HumanMessage(content="What is a mixture of experts model?"),
    # ]
    #
    # llm = ChatDatabricks(endpoint_name="databricks-meta-llama-3-3-70b-instruct")
    # llm.invoke(messages)
    from databricks_langchain import ChatDatabricks
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [
        SystemMessage(content="You're a helpful assistant"),
        HumanMessage(content="What is a mixture of experts model?"),
    ]

    # databricks-langchain has no `endpoint_name`: it refuses the page's spelling before any request.
    with pytest.raises(ValidationError, match="endpoint"):
        ChatDatabricks(endpoint_name=LOCAL_CHAT)
    llm = ChatDatabricks(endpoint=LOCAL_CHAT)
    answer = llm.invoke(messages)
    assert answer.content.strip()


def test_the_chat_request_and_response_formats(fondasi_server):
    # {
    #   "messages": [
    #     {
    #       "role": "user",
    #       "content": "What is a mixture of experts model?"
    #     }
    #   ],
    #   "max_tokens": 100,
    #   "temperature": 0.1
    # }
    # ... and the expected response: {"model", "choices": [{"message": {}, "index": 0, "finish_reason"}],
    # "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}, "object": "chat.completion", "id", "created"}
    request = {"messages": [{"role": "user", "content": "What is a mixture of experts model?"}],
               "max_tokens": 100, "temperature": 0.1}
    answer = httpx.post(f"{fondasi_server.url}/serving-endpoints/{LOCAL_CHAT}/invocations", json=request,
                        headers={"Authorization": f"Bearer {fondasi_server.token}"}, timeout=120).json()
    assert {"model", "choices", "usage", "object", "id", "created"} <= set(answer)
    assert answer["object"] == "chat.completion"
    [choice] = answer["choices"]
    assert {"message", "index", "finish_reason"} <= set(choice) and choice["index"] == 0
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert set(answer["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


# --- Model penalaran (reasoning) ---------------------------------------------------------------------


def ask_why_the_sky_is_blue(fondasi_server, monkeypatch):
    """The first reasoning example; its ``client`` and ``response`` for the follow-ups."""
    # from openai import OpenAI
    # import base64
    # import httpx
    #
    # client = OpenAI(
    #   api_key=os.environ.get('YOUR_DATABRICKS_TOKEN'),
    #   base_url=os.environ.get('YOUR_DATABRICKS_BASE_URL')
    #   )
    #
    # response = client.chat.completions.create(
    #     model="databricks-claude-3-7-sonnet",
    #     messages=[{"role": "user", "content": "Why is the sky blue?"}],
    #     max_tokens=20480,
    #     extra_body={
    #         "thinking": {
    #             "type": "enabled",
    #             "budget_tokens": 10240
    #         }
    #     }
    # )
    #
    # msg = response.choices[0].message
    # reasoning = msg.content[0]["summary"][0]["text"]
    # answer = msg.content[1]["text"]
    #
    # print("Reasoning:", reasoning)
    # print("Answer:", answer)
    monkeypatch.setenv("YOUR_DATABRICKS_TOKEN", fondasi_server.token)
    monkeypatch.setenv("YOUR_DATABRICKS_BASE_URL", f"{fondasi_server.url}/serving-endpoints")

    client = OpenAI(
      api_key=os.environ.get('YOUR_DATABRICKS_TOKEN'),
      base_url=os.environ.get('YOUR_DATABRICKS_BASE_URL')
      )

    response = client.chat.completions.create(
        model="page-claude",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=20480,
        extra_body={
            "thinking": {
                "type": "enabled",
                "budget_tokens": 10240
            }
        }
    )

    msg = response.choices[0].message
    reasoning = msg.content[0]["summary"][0]["text"]
    answer = msg.content[1]["text"]

    print("Reasoning:", reasoning)
    print("Answer:", answer)
    return client, response


def test_reasoning(fondasi_server, claude, monkeypatch):
    # (the example is quoted in ask_why_the_sky_is_blue) and the response the page shows:
    # ChatCompletionMessage(role="assistant", content=[{"type": "reasoning", "summary": [{"type": "summary_text",
    #     "text": "The question is asking about ...", "signature": "EqoBCkgIARABGAIiQAhCWRml..."}]},
    #     {"type": "text", "text": "# Why the Sky Is Blue\n\nThe sky appears blue because ..."}], refusal=None, ...)
    _, response = ask_why_the_sky_is_blue(fondasi_server, monkeypatch)
    msg = response.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": REASONING, "signature": SIGNATURE}]},
        {"type": "text", "text": ANSWER},
    ]
    sent = claude.last_request
    assert sent.path == "/serving-endpoints/databricks-claude-3-7-sonnet/invocations"
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 10240} and sent.json["max_tokens"] == 20480


def test_reasoning_follow_up_without_the_reasoning_blocks(fondasi_server, claude, monkeypatch):
    # response = client.chat.completions.create(
    #     model="databricks-claude-3-7-sonnet",
    #     messages=[
    #         {"role": "user", "content": "Why is the sky blue?"},
    #         {"role": "assistant", "content": text_content},
    #         {"role": "user", "content": "Can you explain in a way that a 5-year-old child can understand?"}
    #     ],
    #     max_tokens=20480,
    #     extra_body={
    #         "thinking": {
    #             "type": "enabled",
    #             "budget_tokens": 10240
    #         }
    #     }
    # )
    #
    # answer = response.choices[0].message.content[1]["text"]
    # print("Answer:", answer)
    client, first = ask_why_the_sky_is_blue(fondasi_server, monkeypatch)
    text_content = first.choices[0].message.content[1]["text"]

    response = client.chat.completions.create(
        model="page-claude",
        messages=[
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": text_content},
            {"role": "user", "content": "Can you explain in a way that a 5-year-old child can understand?"}
        ],
        max_tokens=20480,
        extra_body={
            "thinking": {
                "type": "enabled",
                "budget_tokens": 10240
            }
        }
    )

    answer = response.choices[0].message.content[1]["text"]
    print("Answer:", answer)
    assert answer == ANSWER
    assert claude.last_request.json["messages"][1] == {"role": "assistant", "content": ANSWER}


def test_reasoning_follow_up_with_the_whole_assistant_message(fondasi_server, claude, monkeypatch):
    # assistant_message = response.choices[0].message
    #
    # response = client.chat.completions.create(
    #     model="databricks-claude-3-7-sonnet",
    #     messages=[
    #         {"role": "user", "content": "Why is the sky blue?"},
    #         {"role": "assistant", "content": text_content},
    #         {"role": "user", "content": "Can you explain in a way that a 5-year-old child can understand?"},
    #         assistant_message,
    #         {"role": "user", "content": "Can you simplify the previous answer?"}
    #     ],
    #     max_tokens=20480,
    #     extra_body={
    #         "thinking": {
    #             "type": "enabled",
    #             "budget_tokens": 10240
    #         }
    #     }
    # )
    #
    # answer = response.choices[0].message.content[1]["text"]
    # print("Answer:", answer)
    client, response = ask_why_the_sky_is_blue(fondasi_server, monkeypatch)
    text_content = response.choices[0].message.content[1]["text"]
    assistant_message = response.choices[0].message

    response = client.chat.completions.create(
        model="page-claude",
        messages=[
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": text_content},
            {"role": "user", "content": "Can you explain in a way that a 5-year-old child can understand?"},
            assistant_message,
            {"role": "user", "content": "Can you simplify the previous answer?"}
        ],
        max_tokens=20480,
        extra_body={
            "thinking": {
                "type": "enabled",
                "budget_tokens": 10240
            }
        }
    )

    answer = response.choices[0].message.content[1]["text"]
    print("Answer:", answer)
    assert answer == ANSWER
    # The remote model gets the reasoning back with its signature, unmodified, to build on.
    relayed = claude.last_request.json["messages"][3]
    assert relayed["role"] == "assistant" and relayed["content"][0] == {
        "type": "reasoning", "summary": [{"type": "summary_text", "text": REASONING, "signature": SIGNATURE}]}


# --- Model visi (vision) -----------------------------------------------------------------------------


def sent_pictures(vendor: FakeOpenAIUpstream) -> list[Image.Image]:
    """The pictures the remote model received."""
    parts = vendor.last_request.json["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert all(url.startswith("data:image/jpeg;base64,") for url in urls)
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) for url in urls]


def test_vision_with_one_picture(fondasi_server, claude, picture_host):
    # from openai import OpenAI
    # import base64
    # import httpx
    #
    # client = OpenAI(
    #     api_key="dapi-your-databricks-token",
    #     base_url="https://example.staging.cloud.databricks.com/serving-endpoints"
    # )
    #
    # # encode image
    # image_url = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
    # image_data = base64.standard_b64encode(httpx.get(image_url).content).decode("utf-8")
    #
    # # OpenAI request
    # completion = client.chat.completions.create(
    #     model="databricks-claude-3-7-sonnet",
    #     messages=[
    #         {
    #             "role": "user",
    #             "content": [
    #                 {"type": "text", "text": "what's in this image?"},
    #                 {
    #                     "type": "image_url",
    #                     "image_url": {"url": f"data:image/jpeg;base64,{image_data}"},
    #                 },
    #             ],
    #         }
    #     ],
    # )
    #
    # print(completion.choices[0].message.content)
    claude.reasoning_pieces = []
    client = OpenAI(
        api_key=fondasi_server.token,
        base_url=f"{fondasi_server.url}/serving-endpoints"
    )

    # encode image
    image_url = f"{picture_host}/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
    image_data = base64.standard_b64encode(httpx.get(image_url).content).decode("utf-8")

    # OpenAI request
    completion = client.chat.completions.create(
        model="page-claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what's in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/jpeg;base64,{image_data}"},
                    },
                ],
            }
        ],
    )

    print(completion.choices[0].message.content)
    assert completion.choices[0].message.content == ANSWER
    [picture] = sent_pictures(claude)
    assert max(picture.size) <= 1568  # scaled down as the page recommends, keeping the aspect ratio
    assert abs(picture.size[0] / picture.size[1] - 2560 / 1707) < 0.01


def test_vision_with_several_pictures(fondasi_server, claude, picture_host):
    # from openai import OpenAI
    # import base64
    # import httpx
    #
    # client = OpenAI(
    #     api_key="dapi-your-databricks-token",
    #     base_url="https://example.staging.cloud.databricks.com/serving-endpoints"
    # )
    #
    # # Encode multiple images
    #
    # image1_url = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
    # image1_data = base64.standard_b64encode(httpx.get(image1_url).content).decode("utf-8")
    #
    # image2_url = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
    # image2_data = base64.standard_b64encode(httpx.get(image1_url).content).decode("utf-8")
    #
    # # OpenAI request
    #
    # completion = client.chat.completions.create(
    # model="databricks-claude-3-7-sonnet",
    # messages=[
    # {
    # "role": "user",
    # "content": [
    # {"type": "text", "text": "What are in these images? Is there any difference between them?"},
    # {
    # "type": "image_url",
    # "image_url": {"url": f"data:image/jpeg;base64,{image1_data}"},
    # },
    # {
    # "type": "image_url",
    # "image_url": {"url": f"data:image/jpeg;base64,{image2_data}"},
    # },
    # ],
    # }
    # ],
    # )
    #
    # print(completion.choices[0].message.content)
    claude.reasoning_pieces = []
    client = OpenAI(
        api_key=fondasi_server.token,
        base_url=f"{fondasi_server.url}/serving-endpoints"
    )

    # Encode multiple images

    image1_url = f"{picture_host}/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"  # noqa: E501
    image1_data = base64.standard_b64encode(httpx.get(image1_url).content).decode("utf-8")

    image2_url = f"{picture_host}/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"  # noqa: E501,F841
    image2_data = base64.standard_b64encode(httpx.get(image1_url).content).decode("utf-8")

    # OpenAI request

    completion = client.chat.completions.create(
    model="page-claude",
    messages=[
    {
    "role": "user",
    "content": [
    {"type": "text", "text": "What are in these images? Is there any difference between them?"},
    {
    "type": "image_url",
    "image_url": {"url": f"data:image/jpeg;base64,{image1_data}"},
    },
    {
    "type": "image_url",
    "image_url": {"url": f"data:image/jpeg;base64,{image2_data}"},
    },
    ],
    }
    ],
    )

    print(completion.choices[0].message.content)
    assert completion.choices[0].message.content == ANSWER
    assert [max(p.size) <= 1568 for p in sent_pictures(claude)] == [True, True]


# --- Menyematkan kueri model (embeddings) -----------------------------------------------------------


def test_embeddings_with_the_openai_client_of_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    #
    # w = WorkspaceClient()
    # openai_client = w.serving_endpoints.get_open_ai_client()
    #
    # response = openai_client.embeddings.create(
    #   model="databricks-gte-large-en",
    #   input="what is databricks"
    # )
    from databricks.sdk import WorkspaceClient

    w = WorkspaceClient()
    openai_client = w.serving_endpoints.get_open_ai_client()

    response = openai_client.embeddings.create(
      model=LOCAL_EMBEDDINGS,
      input="what is databricks"
    )
    assert len(response.data) == 1 and len(response.data[0].embedding) == 384


def test_embeddings_with_the_openai_client(fondasi_server):
    # import os
    # import openai
    # from openai import OpenAI
    #
    # client = OpenAI(
    #     api_key="dapi-your-databricks-token",
    #     base_url="https://example.staging.cloud.databricks.com/serving-endpoints"
    # )
    #
    # response = client.embeddings.create(
    #   model="databricks-gte-large-en",
    #   input="what is databricks"
    # )
    assert openai  # imported as on the page
    client = OpenAI(
        api_key=fondasi_server.token,
        base_url=f"{fondasi_server.url}/serving-endpoints"
    )

    response = client.embeddings.create(
      model=LOCAL_EMBEDDINGS,
      input="what is databricks"
    )
    assert len(response.data[0].embedding) == 384 and response.usage.prompt_tokens > 0


def test_embeddings_with_sql(fondasi_server):
    # SELECT ai_query(
    #     "databricks-gte-large-en",
    #     "Can you explain AI in ten words?"
    #   )
    rows = sql(fondasi_server, f"""SELECT ai_query(
    "{LOCAL_EMBEDDINGS}",
    "Can you explain AI in ten words?"
  )""")
    vector = only_value(rows)
    assert len(vector) == 384 and all(isinstance(x, float) for x in vector)


def test_embeddings_with_curl(fondasi_server):
    # curl \
    # -u token:$DATABRICKS_TOKEN \
    # -X POST \
    # -H "Content-Type: application/json" \
    # -d  '{ "input": "Embed this sentence!"}' \
    # https://<workspace_host>.databricks.com/serving-endpoints/databricks-gte-large-en/invocations
    answer = curl(
        "-u", f"token:{fondasi_server.token}",
        "-X", "POST",
        "-H", "Content-Type: application/json",
        "-d", '{ "input": "Embed this sentence!"}',
        f"{fondasi_server.url}/serving-endpoints/{LOCAL_EMBEDDINGS}/invocations",
    )
    assert answer["object"] == "list" and len(answer["data"][0]["embedding"]) == 384


def test_embeddings_with_mlflow(databricks_env):
    # import mlflow.deployments
    #
    # export DATABRICKS_HOST="https://<workspace_host>.databricks.com"
    # export DATABRICKS_TOKEN="dapi-your-databricks-token"
    #
    # client = mlflow.deployments.get_deploy_client("databricks")
    #
    # embeddings_response = client.predict(
    #     endpoint="databricks-gte-large-en",
    #     inputs={
    #         "input": "Here is some text to embed"
    #     }
    # )
    client = mlflow.deployments.get_deploy_client("databricks")

    embeddings_response = client.predict(
        endpoint=LOCAL_EMBEDDINGS,
        inputs={
            "input": "Here is some text to embed"
        }
    )
    assert len(embeddings_response["data"][0]["embedding"]) == 384


def test_embeddings_with_the_sdk(databricks_env):
    # from databricks.sdk import WorkspaceClient
    # from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
    #
    # w = WorkspaceClient()
    # response = w.serving_endpoints.query(
    #     name="databricks-gte-large-en",
    #     input="Embed this sentence!"
    # )
    # print(response.data[0].embedding)
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ChatMessage, ChatMessageRole  # noqa: F401 (as on the page)

    w = WorkspaceClient()
    response = w.serving_endpoints.query(
        name=LOCAL_EMBEDDINGS,
        input="Embed this sentence!"
    )
    print(response.data[0].embedding)
    assert len(response.data[0].embedding) == 384


def test_langchain_embeddings(databricks_env):
    # from databricks_langchain import DatabricksEmbeddings
    #
    # embeddings = DatabricksEmbeddings(endpoint="databricks-gte-large-en")
    # embeddings.embed_query("Can you explain AI in ten words?")
    from databricks_langchain import DatabricksEmbeddings

    embeddings = DatabricksEmbeddings(endpoint=LOCAL_EMBEDDINGS)
    vector = embeddings.embed_query("Can you explain AI in ten words?")
    assert len(vector) == 384


def test_the_embeddings_request_and_response_formats(fondasi_server):
    # {
    #   "input": [
    #     "embedding text"
    #   ]
    # }
    # ... and the expected response:
    # {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": []}],
    #  "model": "text-embedding-ada-002-v2", "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    answer = httpx.post(f"{fondasi_server.url}/serving-endpoints/{LOCAL_EMBEDDINGS}/invocations",
                        json={"input": ["embedding text"]},
                        headers={"Authorization": f"Bearer {fondasi_server.token}"}, timeout=60).json()
    assert answer["object"] == "list" and answer["model"]
    [item] = answer["data"]
    assert item["object"] == "embedding" and item["index"] == 0 and len(item["embedding"]) == 384
    assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"]


def test_the_embeddings_are_normalised(fondasi_server):
    # import numpy as np
    #
    # def is_normalized(vector: list[float], tol=1e-3) -> bool:
    #     magnitude = np.linalg.norm(vector)
    #     return abs(magnitude - 1) < tol
    def is_normalized(vector: list[float], tol=1e-3) -> bool:
        magnitude = np.linalg.norm(vector)
        return abs(magnitude - 1) < tol

    client = OpenAI(api_key=fondasi_server.token, base_url=f"{fondasi_server.url}/serving-endpoints")
    vectors = client.embeddings.create(model=LOCAL_EMBEDDINGS, input=["what is databricks", "a cat"]).data
    assert all(is_normalized(v.embedding) for v in vectors)
    assert not is_normalized([2 * x for x in vectors[0].embedding])
