"""Reasoning (PRODUCT.md §4) through the HTTP API, on the embedded chat model as a hybrid reasoner."""
import json

import pytest

from endpoints.signing import sign_reasoning
from tests.conftest import api_client
from tests.endpoints.test_invocations import post, sse_events, streamed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/serving-endpoints/local-smollm2-chat/invocations"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
THINK = {"messages": QUESTION, "max_tokens": 40, "temperature": 0, "thinking": {"type": "enabled", "budget_tokens": 12}}


@pytest.fixture
def client(default_endpoints, auth_headers):
    return api_client(auth_headers)


async def answer(client, body) -> dict:
    response = await post(client, URL, body)
    assert response.status_code == 200, response.content
    return response.json()


async def test_thinking_turns_content_into_a_reasoning_block_then_a_text_block(client):
    body = await answer(client, THINK)
    content = body["choices"][0]["message"]["content"]
    assert [block["type"] for block in content] == ["reasoning", "text"]
    summary = content[0]["summary"]
    assert len(summary) == 1 and summary[0]["type"] == "summary_text"
    assert summary[0]["text"].strip() and summary[0]["signature"] == sign_reasoning(summary[0]["text"])
    assert isinstance(content[1]["text"], str)
    usage = body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning <= 12  # cut off at the budget
    assert usage["completion_tokens"] > reasoning and usage["completion_tokens"] <= 40


@pytest.mark.parametrize(("question", "params"), [
    ("What is 2+2?", {"temperature": 0}),  # greedy, it used to close <think> after 7 tokens
    ("Say hello.", {"temperature": 0.7, "seed": 1}),
    ("Say hello.", {"temperature": 0.7, "seed": 4}),
])
@pytest.mark.parametrize("budget", [12, 40])
async def test_enabled_thinking_always_reasons_for_a_while(client, question, params, budget):
    body = await answer(client, {"messages": [{"role": "user", "content": question}], "max_tokens": budget + 8,
                                 "thinking": {"type": "enabled", "budget_tokens": budget}, **params})
    reasoning = body["choices"][0]["message"]["content"][0]["summary"][0]["text"]
    tokens = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning.strip() and min(16, budget) <= tokens <= budget


async def test_without_thinking_content_stays_a_string(client):
    body = await answer(client, {"messages": QUESTION, "max_tokens": 8, "temperature": 0})
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert "completion_tokens_details" not in body["usage"]


async def test_a_disabled_thinking_block_is_accepted_and_answers_plainly(client):
    body = await answer(client, {"messages": QUESTION, "max_tokens": 8, "temperature": 0, "thinking": {"type": "disabled"}})
    assert isinstance(body["choices"][0]["message"]["content"], str)


async def test_reasoning_effort_maps_to_a_budget_capped_by_max_tokens(client):
    body = await answer(client, {"messages": QUESTION, "max_tokens": 20, "temperature": 0, "reasoning_effort": "low"})
    assert [b["type"] for b in body["choices"][0]["message"]["content"]] == ["reasoning", "text"]
    assert 0 < body["usage"]["completion_tokens_details"]["reasoning_tokens"] <= 10  # half of max_tokens


async def test_streaming_sends_reasoning_deltas_first_then_text_deltas_in_blocks(client):
    whole = await answer(client, THINK)
    events = sse_events(await streamed(await post(client, URL, {**THINK, "stream": True})))
    kinds, reasoning, text, signatures = [], [], [], []
    for event in events[:-1]:
        for block in event["choices"][0]["delta"].get("content") or []:
            kinds.append(block["type"])
            if block["type"] == "reasoning":
                reasoning.append(block["summary"][0]["text"])
                signatures += [block["summary"][0]["signature"]] if "signature" in block["summary"][0] else []
            else:
                text.append(block["text"])
    first_text = kinds.index("text")
    assert set(kinds[:first_text]) == {"reasoning"} and "reasoning" not in kinds[first_text:]
    assert kinds.count("reasoning") > 2  # token by token
    assert len(signatures) == 1
    content = whole["choices"][0]["message"]["content"]
    assert "".join(reasoning) == content[0]["summary"][0]["text"]
    assert signatures[0] == content[0]["summary"][0]["signature"]
    assert "".join(text) == content[1]["text"]


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "message"),
    [
        ({"type": "enabled", "budget_tokens": 64}, 64, "thinking.budget_tokens (64) must be less than max_tokens (64)"),
        ({"type": "enabled", "budget_tokens": 100}, 50, "thinking.budget_tokens (100) must be less than max_tokens (50)"),
        ({"type": "enabled", "budget_tokens": 0}, 50, "Invalid 'thinking.budget_tokens'"),
        ({"type": "enabled", "budget_tokens": "lots"}, 50, "Invalid 'thinking.budget_tokens'"),
        ({"type": "enabled"}, 50, "thinking.budget_tokens is required"),
        ({"type": "sometimes", "budget_tokens": 8}, 50, "Invalid 'thinking.type': input should be 'enabled' or 'disabled'"),
        ({"type": "enabled", "budget_tokens": 8, "effort": 2}, 50, "Unknown parameter 'thinking.effort'"),
    ],
)
async def test_a_bad_thinking_request_is_a_400_saying_why(client, thinking, max_tokens, message):
    response = await post(client, URL, {"messages": QUESTION, "max_tokens": max_tokens, "thinking": thinking})
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in response.json()["message"]


async def test_thinking_and_reasoning_effort_together_is_a_400(client):
    response = await post(client, URL, {**THINK, "reasoning_effort": "high"})
    assert response.status_code == 400 and "not both" in response.json()["message"]


async def test_an_unknown_reasoning_effort_is_a_400(client):
    response = await post(client, URL, {"messages": QUESTION, "reasoning_effort": "maximum"})
    assert response.status_code == 400 and "'low', 'medium' or 'high'" in response.json()["message"]


def follow_up(assistant_content) -> list:
    return [*QUESTION, {"role": "assistant", "content": assistant_content}, {"role": "user", "content": "Say it shorter."}]


async def test_the_whole_assistant_message_can_be_sent_back_unmodified(client):
    first = (await answer(client, THINK))["choices"][0]["message"]
    body = await answer(client, {"messages": [*QUESTION, first, {"role": "user", "content": "Shorter?"}],
                                 "max_tokens": 40, "temperature": 0, "thinking": {"type": "enabled", "budget_tokens": 8}})
    assert body["choices"][0]["message"]["content"][1]["type"] == "text"


async def test_reasoning_sent_back_with_a_changed_text_is_a_400_about_the_signature(client):
    first = (await answer(client, THINK))["choices"][0]["message"]["content"]
    first[0]["summary"][0]["text"] += " And also the moon."
    response = await post(client, URL, {"messages": follow_up(first), "max_tokens": 8})
    assert response.status_code == 400
    message = response.json()["message"]
    assert "messages[1].content[0].summary[0]" in message and "signature" in message


async def test_reasoning_sent_back_without_its_signature_is_a_400(client):
    block = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I made this up."}]}
    response = await post(client, URL, {"messages": follow_up([block, {"type": "text", "text": "Rayleigh."}]), "max_tokens": 8})
    assert response.status_code == 400 and "has no signature" in response.json()["message"]


async def test_only_the_latest_assistant_turns_reasoning_reaches_the_model(client):
    reasoning = "Light scatters off air molecules; blue scatters most."
    block = {"type": "reasoning", "summary": [{"type": "summary_text", "text": reasoning, "signature": sign_reasoning(reasoning)}]}
    text = {"type": "text", "text": "Because of Rayleigh scattering."}

    async def prompt_tokens(messages) -> int:
        return (await answer(client, {"messages": messages, "max_tokens": 1}))["usage"]["prompt_tokens"]

    earlier = [*QUESTION, {"role": "assistant", "content": [block, text]}, {"role": "user", "content": "And sunsets?"},
               {"role": "assistant", "content": "They are red."}, {"role": "user", "content": "Why?"}]
    earlier_plain = [*QUESTION, {"role": "assistant", "content": [text]}, *earlier[2:]]
    # An earlier turn's reasoning is dropped: it is neither seen nor counted.
    assert await prompt_tokens(earlier) == await prompt_tokens(earlier_plain)
    # The latest turn's reasoning is seen, and counted as input.
    latest = follow_up([block, text])
    latest_plain = follow_up([text])
    assert await prompt_tokens(latest) > await prompt_tokens(latest_plain)


async def test_reasoning_blocks_are_refused_in_user_messages(client):
    block = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x", "signature": "y"}]}
    response = await post(client, URL, {"messages": [{"role": "user", "content": [block]}]})
    assert response.status_code == 400 and "assistant messages" in response.json()["message"]


async def test_an_unknown_content_part_type_is_a_400_naming_it(client):
    response = await post(client, URL, {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]})
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Invalid 'messages[0].content[0]': unknown type 'video_url'; expected one of 'text', 'image_url', 'reasoning'."
    )
    assert json.dumps(response.json())  # the documented shape, nothing else
