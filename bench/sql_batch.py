"""Benchmark: batch ``ai_query`` over the rows of a CSV file, against a slow upstream.

The shared harness's fake OpenAI-compatible upstream (``../shared/bench/fake_upstream.py``) answers
every request after ``FAKE_DELAY_MS`` (200 ms). It is served as the harness serves it (uvicorn with
uvloop and httptools, from the harness venv that ``bench/gateway_cost.py`` sets up in
``--harness``) when that venv exists, else by daphne from ``.venv`` (which costs more CPU per
request, on the same two cores). The upstream is pinned to core 0 and this process to core 1, as
in ``gateway_cost.py``. Fondasi (in this process: settings, a throwaway database, an
``openai-compatible`` endpoint pointing at the upstream) runs::

    SELECT id, ai_query('bench-chat', 'Summarise: ' || review) FROM 'reviews.csv'

over 200 rows at each concurrency. With every request taking the same delay, concurrency ``c``
allows ``rows / (ceil(rows / c) * delay)`` rows per second; the table gives the rows per second
measured and its ratio to that (target ≥ 85 %).

    .venv/bin/python bench/sql_batch.py                      # 200 rows at 1, 8 and 32 (~50 s)
    .venv/bin/python bench/sql_batch.py --rows 64 --concurrency 8 32
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import HARNESS, chat_endpoints, free_port, running, shared_harness  # noqa: E402

TARGET = 0.85


def server_command(harness: Path, port: int) -> tuple[list[str], str]:
    """How to serve the fake upstream, and its name for the report."""
    uvicorn = harness / "venv" / "bin" / "uvicorn"
    if uvicorn.exists():
        return [str(uvicorn), "fake_upstream:app", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning"], "uvicorn (harness venv)"
    return [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "fake_upstream:app"], "daphne"


@contextlib.contextmanager
def upstream(delay_ms: int, harness: Path, log: Path) -> Iterator[tuple[str, str]]:
    """The shared fake upstream on a free port, pinned to core 0; yields its ``/v1`` base URL and server name."""
    port = free_port()
    command, server = server_command(harness, port)
    url = f"http://127.0.0.1:{port}"
    with running(["taskset", "-c", "0", *command], url + "/health", log, timeout=30,
                 cwd=shared_harness(), env={**os.environ, "FAKE_DELAY_MS": str(delay_ms)}):
        yield url + "/v1", server


def set_up_fondasi(base: str, folder: Path) -> None:
    """Django with a throwaway database and one endpoint served by the upstream."""
    endpoints = folder / "endpoints.yaml"
    endpoints.write_text(chat_endpoints(base))
    os.environ.update({"FONDASI_VAR_DIR": str(folder), "FONDASI_ENDPOINTS_FILE": str(endpoints),
                       "DJANGO_SETTINGS_MODULE": "playground.settings", "LOG_LEVEL": "WARNING"})
    os.environ.pop("DATABASE_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("load_endpoints", stdout=open(os.devnull, "w"))


def measure(csv: Path, rows: int, concurrency: int) -> float:
    from endpoints.sql import Engine

    sql = f"SELECT id, ai_query('bench-chat', 'Summarise: ' || review) AS summary FROM '{csv}'"
    started = time.perf_counter()
    result = Engine("bench", concurrency=concurrency).run(sql)
    seconds = time.perf_counter() - started
    assert [row[0] for row in result.rows] == list(range(rows)), "rows came back out of order"
    assert all(row[1] for row in result.rows), "a row has no answer"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--harness", type=Path, default=HARNESS,
                        help="the shared harness folder bench/gateway_cost.py sets up (its venv has uvicorn)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    folder = Path(tempfile.mkdtemp(prefix="fondasi-sql-bench-"))
    csv = folder / "reviews.csv"
    csv.write_text("id,review\n" + "".join(f"{i},Review {i}: the product did what it said mostly.\n" for i in range(args.rows)))
    delay = args.delay_ms / 1000
    with upstream(args.delay_ms, args.harness, folder / "upstream.log") as (base, server):
        set_up_fondasi(base, folder)
        measure(csv, args.rows, max(args.concurrency))  # warm-up: imports, first connections
        lines = []
        for concurrency in args.concurrency:
            seconds = measure(csv, args.rows, concurrency)
            allowed = args.rows / (math.ceil(args.rows / concurrency) * delay)
            measured = args.rows / seconds
            ratio = measured / allowed
            lines.append(f"| {concurrency:>11} | {seconds:>7.2f} | {measured:>6.1f} | {allowed:>14.1f} | {ratio:>5.1%} | "
                         f"{'ok' if ratio >= TARGET else 'BELOW'} |")
    print(f"\nai_query over {args.rows} rows of a CSV file; upstream: {server}, delay {args.delay_ms} ms; "
          f"target ≥ {TARGET:.0%}\n")
    print("| concurrency | seconds | rows/s | rows/s allowed | ratio | ≥ 85 % |")
    print("|------------:|--------:|-------:|---------------:|------:|:------:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
