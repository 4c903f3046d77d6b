"""The real `openai` client against a live Fondasi (daphne), as the README shows it."""
import json
import math

import openai
import pytest

@pytest.fixture(scope="module")
def client(fondasi_server) -> openai.OpenAI:
    return openai.OpenAI(api_key=fondasi_server.token, base_url=fondasi_server.url + "/serving-endpoints", max_retries=0)


def test_chat_completions(client):
    answer = client.chat.completions.create(
        model="local-smollm2-chat",
        messages=[{"role": "user", "content": "What is a mixture of experts model?"}],
        max_tokens=12,
        temperature=0,
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content.strip()
    assert answer.usage.completion_tokens <= 12 and answer.usage.prompt_tokens > 5


def test_streamed_chat_equals_the_whole_answer_at_temperature_zero(client):
    request = dict(model="local-smollm2-chat", messages=[{"role": "user", "content": "Count to five."}],
                   max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**request).choices[0].message.content
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_with_and_without_streaming(client):
    whole = client.completions.create(model="local-smollm2-completions", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert whole.choices[0].text and whole.usage.completion_tokens <= 8
    parts = list(client.completions.create(model="local-smollm2-completions", prompt="Once upon a time",
                                           max_tokens=8, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text


def test_embeddings_are_normalised_384_floats(client):
    # The client asks for base64 by default and decodes it.
    out = client.embeddings.create(model="local-minilm-embeddings", input=["hello world", "bonjour le monde"])
    assert len(out.data) == 2
    for item in out.data:
        assert len(item.embedding) == 384
        assert abs(math.sqrt(sum(x * x for x in item.embedding)) - 1) < 1e-3


def test_models_list_and_retrieve(client):
    ids = {m.id for m in client.models.list()}
    assert {"local-smollm2-chat", "local-smollm2-completions", "local-minilm-embeddings"} <= ids
    assert client.models.retrieve("local-minilm-embeddings").id == "local-minilm-embeddings"


def test_errors_reach_the_client_as_its_own_exceptions(client, fondasi_server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-endpoint", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="local-smollm2-chat", messages=[{"role": "user", "content": "x"}], temperature=9)
    assert "temperature" in str(bad.value)
    stranger = openai.OpenAI(api_key="dapi-wrong", base_url=fondasi_server.url + "/serving-endpoints", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_the_product_pages_reasoning_example(client):
    """The reasoning example of the product page, with only the endpoint name changed."""
    response = client.chat.completions.create(
        model="local-smollm2-chat",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=48,
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 16}},
    )
    msg = response.choices[0].message
    reasoning = msg.content[0]["summary"][0]["text"]
    answer = msg.content[1]["text"]
    assert reasoning.strip() and isinstance(answer, str)
    assert msg.content[0]["summary"][0]["signature"]
    # Continuing the thread with the whole, unmodified assistant message (the page's second example).
    follow = client.chat.completions.create(
        model="local-smollm2-chat",
        messages=[{"role": "user", "content": "Why is the sky blue?"}, msg,
                  {"role": "user", "content": "Can you simplify the previous answer?"}],
        max_tokens=48,
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 16}},
    )
    assert follow.choices[0].message.content[1]["type"] == "text"


def test_streamed_reasoning_arrives_before_the_answer(client):
    kinds = []
    for chunk in client.chat.completions.create(
        model="local-smollm2-chat", messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=32, stream=True, extra_body={"thinking": {"type": "enabled", "budget_tokens": 8}},
    ):
        for block in (chunk.choices[0].delta.content or []) if chunk.choices else []:
            kinds.append(block["type"])
    assert kinds[0] == "reasoning" and "text" in kinds
    assert "reasoning" not in kinds[kinds.index("text"):]


def test_tools_with_the_openai_client(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}]
    answer = client.chat.completions.create(
        model="local-smollm2-chat", messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=tools, tool_choice="required", parallel_tool_calls=False, max_tokens=60, temperature=0,
    )
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    streamed = list(client.chat.completions.create(
        model="local-smollm2-chat", messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=tools, tool_choice="required", parallel_tool_calls=False, max_tokens=60, temperature=0, stream=True,
    ))
    parts = [c.choices[0].delta.tool_calls[0] for c in streamed if c.choices and c.choices[0].delta.tool_calls]
    assert parts[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in parts) == call.function.arguments


def test_structured_output_with_the_openai_client(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    answer = client.chat.completions.create(
        model="local-smollm2-chat", messages=[{"role": "user", "content": "Name a big city."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city", "population"} and isinstance(data["population"], int)


def png_data_url(width: int, height: int) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_images_with_the_openai_client(client, live_vendor):
    import base64
    import io

    from PIL import Image

    answer = client.chat.completions.create(
        model="fake-vision",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": png_data_url(4000, 2000)}},
            {"type": "image_url", "image_url": {"url": png_data_url(640, 480)}},
        ]}],
        max_tokens=16,
    )
    assert answer.choices[0].message.content == "Hello, world!"
    sent = live_vendor.last_request.json["messages"][0]["content"]
    first = Image.open(io.BytesIO(base64.b64decode(sent[1]["image_url"]["url"].split(",", 1)[1])))
    from endpoints.images import estimate_tokens, target_size

    assert first.format == "JPEG" and first.size == target_size(4000, 2000)
    assert max(first.size) <= 1568 and estimate_tokens(*first.size) <= 1600
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="local-smollm2-chat",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(300, 300)}}]}],
        )
    assert "cannot see images" in str(refused.value)
