"""Benchmark (a): the embedded chat model through Fondasi's HTTP API vs raw llama-cpp-python.

Same prompts, same sampling (temperature 0), same thread count, same run. The raw baseline is
what a user would write: `Llama(...).create_chat_completion(..., stream=True)` in-process. The
Fondasi side streams `POST /serving-endpoints/local-smollm2-chat/invocations` over HTTP. The two
run one after the other so they never compete for the CPU.

    .venv/bin/python bench/local_vs_raw.py [--max-tokens 64] [--repeats 3]

Prints a table: time to first token, decode tokens/s and end-to-end tokens/s, with ratios
(Fondasi / raw for throughput, raw / Fondasi for latency, so higher is better; target >= 0.95).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.server import fondasi  # noqa: E402

PROMPTS = [
    "What is a mixture of experts model?",
    "Write a short poem about the sea.",
    "Explain what an API is to a child.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
]


def model_path() -> str:
    from endpoints.providers.local import LOCAL_MODELS

    return str(LOCAL_MODELS["smollm2-135m-instruct"].weights_path())


def measure_raw(max_tokens: int, repeats: int, threads: int) -> list[dict]:
    from llama_cpp import Llama

    llm = Llama(model_path=model_path(), n_ctx=2048, n_threads=threads, verbose=False)
    runs = []
    for i in range(repeats * len(PROMPTS) + 1):
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.perf_counter()
        first = None
        tokens = 0
        for chunk in llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0, stream=True
        ):
            delta = chunk["choices"][0]["delta"]
            if delta.get("content"):
                tokens += 1  # llama-cpp-python streams one chunk per token
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if i:  # the first run warms caches and is not recorded
            runs.append({"ttft": first - t0, "tokens": tokens, "decode": end - first, "total": end - t0})
    del llm
    gc.collect()
    return runs


def measure_http(max_tokens: int, repeats: int, threads: int) -> list[dict]:
    runs = []
    with fondasi(env={"FONDASI_LOCAL_THREADS": str(threads)}) as (url, token, _pid):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=120) as client:
            for i in range(repeats * len(PROMPTS) + 1):
                prompt = PROMPTS[i % len(PROMPTS)]
                body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
                t0 = time.perf_counter()
                first = None
                tokens = 0
                with client.stream("POST", url + "/serving-endpoints/local-smollm2-chat/invocations",
                                   json=body, headers=headers) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                            first = time.perf_counter()
                end = time.perf_counter()
                if i:
                    runs.append({"ttft": first - t0, "tokens": tokens, "decode": end - first, "total": end - t0})
    return runs


def summarise(runs: list[dict]) -> dict:
    return {
        "ttft_ms": statistics.median(r["ttft"] for r in runs) * 1000,
        "decode_tps": sum(r["tokens"] - 1 for r in runs) / sum(r["decode"] for r in runs),
        "e2e_tps": sum(r["tokens"] for r in runs) / sum(r["total"] for r in runs),
        "tokens": sum(r["tokens"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    raw = summarise(measure_raw(args.max_tokens, args.repeats, args.threads))
    api = summarise(measure_http(args.max_tokens, args.repeats, args.threads))
    print(f"\nSmolLM2-135M-Instruct Q4_1, {len(PROMPTS)} prompts x {args.repeats}, max_tokens={args.max_tokens}, "
          f"temperature 0, {args.threads} threads\n")
    print("| metric | raw llama-cpp-python | Fondasi HTTP (SSE) | ratio (higher is better) |")
    print("|---|---:|---:|---:|")
    print(f"| time to first token, median | {raw['ttft_ms']:.1f} ms | {api['ttft_ms']:.1f} ms | {raw['ttft_ms'] / api['ttft_ms']:.3f} |")
    print(f"| decode tokens/s | {raw['decode_tps']:.1f} | {api['decode_tps']:.1f} | {api['decode_tps'] / raw['decode_tps']:.3f} |")
    print(f"| end-to-end tokens/s | {raw['e2e_tps']:.1f} | {api['e2e_tps']:.1f} | {api['e2e_tps'] / raw['e2e_tps']:.3f} |")
    print(f"| completion tokens | {raw['tokens']} | {api['tokens']} | |")


if __name__ == "__main__":
    main()
