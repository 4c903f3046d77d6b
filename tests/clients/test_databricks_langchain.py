"""The real `databricks-langchain` (ChatDatabricks, DatabricksEmbeddings) against a live Fondasi.

ChatDatabricks talks to ``/serving-endpoints/chat/completions`` through the OpenAI client the SDK
configures, or to ``/serving-endpoints/responses`` with ``use_responses_api=True``.
DatabricksEmbeddings goes through mlflow's deployments client, so it reads ``DATABRICKS_HOST`` and
``DATABRICKS_TOKEN``.
"""
import json
import math
from functools import reduce
from operator import add

import pytest
from databricks.sdk import WorkspaceClient
from databricks_langchain import ChatDatabricks, DatabricksEmbeddings
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from openai import NotFoundError

from tests.clients.conftest import LOCAL_CHAT, LOCAL_EMBEDDINGS, management, openai_entity

QUESTION = [SystemMessage(content="You are brief."), HumanMessage(content="Count to five.")]


@pytest.fixture
def workspace(fondasi_server) -> WorkspaceClient:
    return WorkspaceClient(host=fondasi_server.url, token=fondasi_server.token)


def chat(workspace: WorkspaceClient, **kwargs) -> ChatDatabricks:
    return ChatDatabricks(**{"endpoint": LOCAL_CHAT, "max_tokens": 8, "temperature": 0, "max_retries": 0,
                             "workspace_client": workspace, **kwargs})


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_invoke(workspace):
    answer = chat(workspace).invoke(QUESTION)
    assert isinstance(answer, AIMessage) and answer.content.strip()
    assert 0 < answer.usage_metadata["output_tokens"] <= 8 and answer.usage_metadata["input_tokens"] > 5
    assert answer.response_metadata["finish_reason"] in ("stop", "length")


def test_the_responses_api_invokes_and_streams_the_same_text(workspace):
    llm = chat(workspace, use_responses_api=True)
    whole = llm.invoke(QUESTION)
    assert isinstance(whole, AIMessage) and whole.text.strip()
    chunks = list(llm.stream(QUESTION))
    assert len([c for c in chunks if c.text]) > 1  # streamed in pieces
    assert "".join(c.text for c in chunks) == whole.text  # temperature 0


def test_invoke_with_the_environments_credentials(databricks_env):
    # No workspace_client: ChatDatabricks makes a WorkspaceClient from DATABRICKS_HOST / DATABRICKS_TOKEN.
    answer = ChatDatabricks(endpoint=LOCAL_CHAT, max_tokens=4, max_retries=0).invoke("Say hi.")
    assert answer.content.strip()


def test_stream_gives_the_invoked_text_and_counts_usage_once(workspace):
    llm = chat(workspace)
    whole = llm.invoke(QUESTION)
    # Usage comes with OpenAI's semantics, when asked for (ChatDatabricks passes the option through).
    chunks = list(llm.stream(QUESTION, stream_options={"include_usage": True}))
    assert len([c for c in chunks if c.content]) > 1
    streamed = reduce(add, chunks)
    assert streamed.content == whole.content
    assert streamed.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"]
    assert streamed.usage_metadata["input_tokens"] == whole.usage_metadata["input_tokens"]


def test_bind_tools_gives_tool_calls_and_takes_their_results_back(workspace):
    llm = chat(workspace, max_tokens=60).bind_tools([get_weather], tool_choice="required")
    question = HumanMessage(content="What is the weather in Oslo?")
    answer = llm.invoke([question])
    call = answer.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
    streamed = reduce(add, llm.stream([question]))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [(call["name"], call["args"])]
    # The conversation goes on with the tool's result.
    result = ToolMessage(content=get_weather.invoke(call["args"]), tool_call_id=call["id"])
    follow = chat(workspace, max_tokens=12).invoke([question, answer, result])
    assert follow.content.strip()


def test_tool_calls_relayed_from_a_vendor_stream_in_fragments(workspace, fondasi_server, openai_upstream, gone):
    gone.append("lc-tools")
    body = {"name": "lc-tools", "config": {"served_entities": [openai_entity(openai_upstream, "llm/v1/chat")]}}
    assert management(fondasi_server, "POST", "", body).status_code == 200
    openai_upstream.tool_calls = [{"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}]
    llm = chat(workspace, endpoint="lc-tools").bind_tools([get_weather])
    for answer in (llm.invoke("Weather in Oslo?"), reduce(add, llm.stream("Weather in Oslo?"))):
        assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert openai_upstream.last_request.json["tools"][0]["function"]["name"] == "get_weather"


def test_an_unknown_endpoint_is_the_openai_clients_not_found(workspace):
    with pytest.raises(NotFoundError) as missing:
        chat(workspace, endpoint="no-such-endpoint").invoke("Hi")
    assert "no-such-endpoint" in str(missing.value)


def test_embeddings_of_a_query_and_of_documents_in_batches(databricks_env):
    embeddings = DatabricksEmbeddings(endpoint=LOCAL_EMBEDDINGS)
    query = embeddings.embed_query("Can you explain AI in ten words?")
    assert len(query) == 384 and abs(math.sqrt(sum(x * x for x in query)) - 1) < 1e-3
    # 25 texts: DatabricksEmbeddings sends 20, then 5; the vectors come back in the texts' order.
    texts = [f"document number {i}" for i in range(24)] + ["Can you explain AI in ten words?"]
    vectors = embeddings.embed_documents(texts)
    assert len(vectors) == 25 and all(len(v) == 384 for v in vectors)
    assert max(abs(a - b) for a, b in zip(vectors[-1], query)) < 1e-4
    assert vectors[0] != vectors[1]
