"""Benchmark (b): what the gateway itself costs, side by side with LiteLLM, in one run.

Uses the shared harness in ``../shared/bench`` (a fast fake OpenAI-compatible upstream, wrk for
non-streaming load, an aiohttp client for 11-event streams, per-process CPU from /proc). The
harness is copied to a scratch folder (it writes venvs and results beside itself) and set up
once (wrk from Debian, a venv with LiteLLM for the peer).

Fondasi serves an ``openai-compatible`` (or, with ``--provider openai``, an ``openai``) endpoint pointing at the fake upstream, pinned to core 1
(as LiteLLM is); the load generators and the upstream share core 0. Both gateways are measured
in the same run, so the ratio between them is the figure to read; absolute numbers depend on
the machine.

    .venv/bin/python bench/gateway_cost.py                 # Fondasi and LiteLLM
    .venv/bin/python bench/gateway_cost.py --no-litellm    # Fondasi only
    DURATION=5 CONCURRENCIES="1 8" .venv/bin/python bench/gateway_cost.py   # shorter

Prints each gateway's harness summary, then a table: server CPU ms per request and per stream,
requests/s per core, RSS, with Fondasi / LiteLLM ratios (lower CPU is better).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import HARNESS, chat_endpoints, fondasi, shared_harness  # noqa: E402

UPSTREAM = "http://127.0.0.1:9000/v1"  # where the harness's start_upstream.sh serves the fake upstream


def harness(folder: Path) -> Path:
    if not (folder / "bench.sh").exists():
        shutil.copytree(shared_harness(), folder, dirs_exist_ok=True)
    if not (folder / "venv" / "bin" / "litellm").exists() or not shutil.which("wrk"):
        print("== setting up the harness (wrk, a LiteLLM venv); once per folder", flush=True)
        subprocess.run(["./setup.sh"], cwd=folder, check=True)
    return folder


def run(cmd: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, cwd=folder, check=True, env={**os.environ, **(env or {})})


def results(folder: Path, label: str) -> dict:
    out = folder / "results" / label

    def lines(name: str) -> list[dict]:
        path = out / name
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    nonstream = [r for r in lines("nonstream.jsonl") if r["target"] == "proxy" and r["requests"]]
    stream = [r for r in lines("stream.jsonl") if r["label"] == "proxy" and r.get("server_cpu_s")]
    rss = json.loads((out / "rss.json").read_text()) if (out / "rss.json").exists() else {}
    per_request = [1000 * r["server_cpu_s"] / r["requests"] for r in nonstream]
    per_stream = [1000 * r["server_cpu_s"] / (r["ok"] + 20) for r in stream]  # + the harness's 20 warm-up streams
    rps_per_core = [r["requests"] / r["server_cpu_s"] for r in nonstream if r["server_cpu_s"]]
    return {
        "cpu_ms_request": (min(per_request), max(per_request)) if per_request else None,
        "cpu_ms_stream": (min(per_stream), max(per_stream)) if per_stream else None,
        "rps_per_core": (min(rps_per_core), max(rps_per_core)) if rps_per_core else None,
        "rss": rss,
        "summary": (out / "summary.md").read_text() if (out / "summary.md").exists() else "",
    }


def span(pair, digits: int = 2) -> str:
    if not pair:
        return "n/a"
    low, high = pair
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}–{high:.{digits}f}"


def rss_mib(rss: dict) -> str:
    for key in ("max_mib", "max_rss_mib", "peak_mib"):
        if key in rss:
            return f"{rss[key]:.0f} MiB"
    return json.dumps(rss) if rss else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=HARNESS)
    parser.add_argument("--no-litellm", action="store_true", help="measure Fondasi only")
    parser.add_argument("--provider", choices=["openai-compatible", "openai"], default="openai-compatible",
                        help="the provider of Fondasi's endpoint (both speak OpenAI's API to the fake upstream)")
    args = parser.parse_args()
    folder = harness(args.folder)
    env = {"DURATION": os.environ.get("DURATION", "15"), "CONCURRENCIES": os.environ.get("CONCURRENCIES", "1 8 32")}
    run(["./stop_all.sh"], folder)
    run(["./start_upstream.sh"], folder)
    measured: dict[str, dict] = {}
    try:
        endpoints = folder / "fondasi-endpoints.yaml"
        endpoints.write_text(chat_endpoints(UPSTREAM, args.provider))
        with fondasi(endpoints, cpu="1") as (url, token, pid):
            run(["./bench.sh"], folder, {
                **env, "PROXY_BASE": url, "PROXY_PATH": "/serving-endpoints/chat/completions",
                "PROXY_MODEL": "bench-chat", "PROXY_KEY": token, "PROXY_PID": str(pid),
                "CAPTURE_HEADER": "", "LABEL": "fondasi",
            })
        measured["Fondasi"] = results(folder, "fondasi")
        if not args.no_litellm:
            run(["./start_litellm.sh"], folder)
            try:
                run(["./bench.sh"], folder, {**env, "LABEL": "litellm", "CAPTURE_HEADER": ""})
            finally:
                run(["./stop_all.sh"], folder)
            measured["LiteLLM"] = results(folder, "litellm")
    finally:
        run(["./stop_all.sh"], folder)

    for name, data in measured.items():
        print(f"\n## {name}\n\n{data['summary']}")
    print("\n## Gateway cost (server CPU of the gateway process; lower is better)\n")
    print("| gateway | CPU ms / request | CPU ms / 11-event stream | requests/s per core | RSS during run |")
    print("|---|---:|---:|---:|---:|")
    for name, data in measured.items():
        print(f"| {name} | {span(data['cpu_ms_request'])} | {span(data['cpu_ms_stream'])} | "
              f"{span(data['rps_per_core'], 0)} | {rss_mib(data['rss'])} |")
    if "LiteLLM" in measured:
        ours, peer = measured["Fondasi"], measured["LiteLLM"]
        if ours["cpu_ms_request"] and peer["cpu_ms_request"]:
            ratio = (sum(ours["cpu_ms_request"]) / 2) / (sum(peer["cpu_ms_request"]) / 2)
            print(f"\nFondasi / LiteLLM CPU per request: {ratio:.2f}×", end="")
        if ours["cpu_ms_stream"] and peer["cpu_ms_stream"]:
            ratio = (sum(ours["cpu_ms_stream"]) / 2) / (sum(peer["cpu_ms_stream"]) / 2)
            print(f"; per stream: {ratio:.2f}×", end="")
        print()
    print("\nTargets (issue 2): ≤ 2.5 ms CPU per request, ≤ 3 ms per stream.")


if __name__ == "__main__":
    main()
