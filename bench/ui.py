"""The playground page in a real browser: what it weighs, and how far its streamed text lags behind.

1. **Page weight**: every ``/static/`` CSS and JS file the playground page requests (htmx
   included) and the HTML document itself, as Chromium fetched them (Playwright
   ``page.on("response")``), raw and gzip-compressed (Python's gzip, level 6), per file and total.
2. **Render lag**: three panes streaming at once from a fake OpenAI-compatible vendor that sends
   ``--pieces`` one-word pieces per answer, one every ``--chunk-delay`` seconds (200 tokens/s by
   default). The vendor records the wall-clock time it wrote each piece to the socket; the page
   records, with a MutationObserver (the DOM changed) and a requestAnimationFrame sampler (the next
   frame), ``(Date.now(), text length)`` of each pane's streaming answer, and the arrival time of
   each WebSocket frame. Lengths count non-whitespace characters: the answer streams as rendered
   Markdown (``<p>`` blocks, whose text drops the trailing space). For every piece boundary (the
   cumulative length after piece k), the lag is the time the page first showed at least that many
   characters minus the time the vendor sent piece k. Both clocks are this machine's wall clock;
   the page's has 1 ms resolution.

   The lag includes, by design, the server's delta coalescing (``FLUSH_SECONDS`` = 75 ms in
   ``playground/consumers.py``; a piece waits in the server until the next flush) and its
   Markdown rendering of the growing answer at each flush.

Loopback only; stops by itself (a watchdog ends it after ``--budget`` seconds) and stops the
servers and the browser it started.

    .venv/bin/python bench/ui.py
    .venv/bin/python bench/ui.py --pieces 1000 --chunk-delay 0.0025   # 400 tokens/s per pane
"""
from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import fondasi  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAIUpstream, _Handler  # noqa: E402

CHROMIUM = os.environ.get("FONDASI_CHROMIUM", "/usr/bin/chromium")
# As tests/e2e/conftest.py: without the background-networking flags Chromium keeps calling Google.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
USER, PASSWORD = "bench", "bench-pass-4-fondasi"
TARGET_MS = 100
WORDS = ["alpha", "beta", "gamma", "delta", "echo", "fox", "golf", "hotel", "india", "juliet"]


# --- the vendor, recording when it sent what ----------------------------------------------------

class _TimedHandler(_Handler):
    def _write_chunk(self, data: bytes) -> None:
        super()._write_chunk(data)
        sent = time.time()  # after the socket write returned (wfile is unbuffered)
        with self.fake._lock:
            self.fake.sent.append((sent, data))


class TimedUpstream(FakeOpenAIUpstream):
    """The fake vendor, noting the wall-clock time each streamed event was written."""

    handler = _TimedHandler

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, bytes]] = []

    def pieces_by_model(self) -> dict[str, list[tuple[float, str]]]:
        """{model: [(sent time, content piece), …]} of the non-empty text pieces, in order."""
        out: dict[str, list[tuple[float, str]]] = {}
        for sent, data in self.sent:
            if not data.startswith(b"data: {"):
                continue
            event = json.loads(data[6:])
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    out.setdefault(event["model"], []).append((sent, text))
        return out


# --- what the page records ------------------------------------------------------------------

# Installed before the page's own script: WebSocket frame arrival times, and long tasks.
INIT_SCRIPT = r"""
(() => {
  window.__bench = { frames: [], sockets: [], longtasks: [] };
  const Native = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    window.__bench.sockets.push(ws);
    // Registered before the page sets onmessage, so it runs first: the arrival time.
    ws.addEventListener("message", (e) => { if (window.__bench.recording) window.__bench.frames.push([Date.now(), e.data]); });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__bench.longtasks.push([performance.timeOrigin + e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { window.__bench.longtaskError = String(e); }
})();
"""

# Samples (Date.now(), length of the streaming answer) per pane, on every DOM change and frame.
START_SAMPLING = r"""
() => {
  const b = window.__bench;
  b.dom = {}; b.raf = {}; b.frames = []; b.recording = true;
  const panes = Array.from(document.querySelectorAll(".pane"));
  const last = { dom: {}, raf: {} };
  for (const p of panes) { b.dom[p.dataset.pane] = []; b.raf[p.dataset.pane] = []; last.dom[p.dataset.pane] = -1; last.raf[p.dataset.pane] = -1; }
  const sample = (kind) => {
    const now = Date.now();
    for (const p of panes) {
      const live = p.querySelector(".turn[data-streaming]:last-of-type .answer-live");
      if (!live) continue;  // not started, or finished (the final delta came before "done")
      const n = live.textContent.replace(/\s+/g, "").length;
      if (n !== last[kind][p.dataset.pane]) { last[kind][p.dataset.pane] = n; b[kind][p.dataset.pane].push([now, n]); }
    }
  };
  b.observer = new MutationObserver(() => sample("dom"));
  b.observer.observe(document.getElementById("panes"), { childList: true, subtree: true, characterData: true });
  const tick = () => { if (!b.recording) return; sample("raf"); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  b.started = Date.now();
}
"""

STOP_SAMPLING = r"""
() => {
  const b = window.__bench;
  b.recording = false; b.observer.disconnect();
  return { dom: b.dom, raf: b.raf, frames: b.frames, longtasks: b.longtasks, longtaskError: b.longtaskError || null,
           started: b.started, stopped: Date.now(),
           panes: Array.from(document.querySelectorAll(".pane")).map((p) => [p.dataset.pane, p.dataset.endpoint]) };
}
"""


# --- measurements ---------------------------------------------------------------------------

def page_weight(browser, base_url: str, storage_state: dict) -> list[tuple[str, int, int, str]]:
    """[(path, raw bytes, gzip-6 bytes, content-encoding served)] of the document and /static/ files."""
    context = browser.new_context(base_url=base_url, storage_state=storage_state)  # a cold cache
    try:
        page = context.new_page()
        responses = []
        page.on("response", lambda response: responses.append(response))
        page.goto("/playground/", wait_until="load")
        page.wait_for_timeout(300)  # late requests, if any
        rows = []
        for response in responses:
            path = urlsplit(response.url).path
            if not (response.request.resource_type == "document" or path.startswith("/static/")):
                continue
            body = response.body()
            rows.append((path, len(body), len(gzip.compress(body, compresslevel=6)),
                         response.headers.get("content-encoding", "-")))
        return rows
    finally:
        context.close()


def first_reaching(samples: list[list[int]], target: int) -> int | None:
    """The first sample time at which the length reached ``target`` (samples sorted by time)."""
    for t, n in samples:
        if n >= target:
            return t
    return None


def visible(text: str) -> int:
    """Non-whitespace characters: what the page's rendered answer shows of ``text``."""
    return len("".join(text.split()))


def lags(sent: list[tuple[float, str]], samples: list[list[int]]) -> list[float]:
    """Lag in ms of each piece: first time the page showed its end minus the time it was sent."""
    out, length = [], 0
    for when, text in sent:
        length += visible(text)
        shown = first_reaching(samples, length)
        if shown is not None:
            out.append(shown - when * 1000)
    return out


def html_text(markup: str) -> int:
    """Visible characters of server-rendered HTML (tags dropped, entities decoded)."""
    return visible(html.unescape(re.sub(r"<[^>]*>", "", markup)))


def frame_samples(frames: list, pane: str) -> list[list[int]]:
    """(arrival time, text length the frame makes visible) of one pane's delta frames: the
    finished blocks appended so far plus the latest tail."""
    out, finished = [], 0
    for t, data in frames:
        msg = json.loads(data)
        if msg.get("type") == "delta" and str(msg.get("pane")) == pane and "tail" in msg:
            finished += html_text(msg.get("append") or "")
            out.append([t, finished + html_text(msg["tail"])])
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def rate(times_ms: list[float], count: int) -> float:
    """Pieces per second between the first and the last of ``count`` pieces."""
    if count < 2 or times_ms[-1] <= times_ms[0]:
        return float("nan")
    return (count - 1) / ((times_ms[-1] - times_ms[0]) / 1000)


def piece_times(sent: list[tuple[float, str]], samples: list[list[int]]) -> list[float]:
    out, length = [], 0
    for _, text in sent:
        length += visible(text)
        shown = first_reaching(samples, length)
        if shown is not None:
            out.append(shown)
    return out


def table(head: list[str], rows: list[list], left: tuple[int, ...] = (0,)) -> str:
    """A markdown table; the columns in ``left`` are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in left else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}"


# --- the run --------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panes", type=int, default=3)
    parser.add_argument("--pieces", type=int, default=400, help="one-word pieces streamed per pane (default 400)")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="seconds between pieces (default 0.005: 200 tokens/s)")
    parser.add_argument("--budget", type=int, default=110, help="watchdog: give up after this many seconds")
    args = parser.parse_args()

    def watchdog(signum, frame):
        raise TimeoutError(f"bench/ui.py ran past its {args.budget} s budget")

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(args.budget)

    from playwright.sync_api import sync_playwright

    upstream = TimedUpstream().start()
    upstream.pieces = [WORDS[i % len(WORDS)] + " " for i in range(args.pieces)]
    upstream.chunk_delay = args.chunk_delay
    upstream.usage = {"prompt_tokens": 1, "completion_tokens": args.pieces}
    names = [f"bench-ui-{i}" for i in range(args.panes)]
    models = {f"bench-model-{i}": names[i] for i in range(args.panes)}
    scratch = Path(tempfile.mkdtemp(prefix="fondasi-bench-ui-"))
    endpoints = scratch / "endpoints.yaml"
    endpoints.write_text("endpoints:\n" + "".join(f"""
  - name: {name}
    task: llm/v1/chat
    served_entities:
      - name: bench-entity-{i}
        external_model:
          name: bench-model-{i}
          provider: openai-compatible
          openai_config: {{openai_api_base: "{upstream.base_url}"}}
""" for i, name in enumerate(names)))

    try:
        with fondasi(endpoints, user=(USER, PASSWORD)) as (url, _token, _pid), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                context = browser.new_context(base_url=url, viewport={"width": 1600, "height": 900})
                context.add_init_script(INIT_SCRIPT)
                page = context.new_page()
                page.set_default_timeout(15_000)
                page.goto("/login/")
                page.fill("input[name=username]", USER)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(lambda u: "/login/" not in u)

                weight = page_weight(browser, url, context.storage_state())

                page.goto("/playground/")
                page.wait_for_function("window.__bench.sockets.some((s) => s.readyState === 1)")
                for button in page.locator(".remove-pane").all():  # the default pane
                    button.click()
                for i, name in enumerate(names):
                    page.select_option("#new-endpoint", name)
                    page.click("#add-pane")
                    page.wait_for_function(f"document.querySelectorAll('.pane').length === {i + 1}")
                page.evaluate(START_SAMPLING)
                page.fill("#prompt", "Stream a long answer, please.")
                page.click("#send")
                expected = args.pieces * args.chunk_delay
                page.wait_for_function(
                    "() => { const p = document.querySelectorAll('.pane'); return p.length && Array.from(p).every("
                    "(x) => x.querySelector('.turn') && !x.querySelector('.turn[data-streaming]')); }",
                    timeout=int((expected * 3 + 20) * 1000))
                page.wait_for_timeout(200)
                data = page.evaluate(STOP_SAMPLING)
            finally:
                browser.close()
    finally:
        upstream.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        signal.alarm(0)

    # --- report -------------------------------------------------------------------------------
    print("## Page weight: /playground/ (document + /static/ CSS and JS, as the browser fetched them)\n")
    rows = [[path, f"{raw:,}", f"{gz:,}", enc] for path, raw, gz, enc in weight]
    rows.append(["**total**", f"**{sum(r[1] for r in weight):,}**", f"**{sum(r[2] for r in weight):,}**", ""])
    print(table(["file", "raw bytes", "gzip -6 bytes", "served Content-Encoding"], rows, left=(0, 3)))

    sent = upstream.pieces_by_model()
    endpoint_model = {v: k for k, v in models.items()}
    print(f"\n## Render lag: {args.panes} panes streaming {args.pieces} pieces each, one every "
          f"{args.chunk_delay * 1000:g} ms (nominal {1 / args.chunk_delay:.0f} tokens/s per pane)\n")
    print("Lag per piece = when the page first showed the text up to that piece − when the vendor wrote it "
          "(ms, same wall clock).\n")
    rows, all_dom, all_raf, all_ws = [], [], [], []
    page_first, page_last, page_count, up_first, up_last, up_count = [], [], 0, [], [], 0
    for pane, endpoint in data["panes"]:
        pieces = sent.get(endpoint_model.get(endpoint, ""), [])
        dom, raf = data["dom"].get(pane, []), data["raf"].get(pane, [])
        ws = frame_samples(data["frames"], pane)
        lag_dom, lag_raf, lag_ws = lags(pieces, dom), lags(pieces, raf), lags(pieces, ws)
        all_dom += lag_dom
        all_raf += lag_raf
        all_ws += lag_ws
        shown = piece_times(pieces, dom)
        up = [t * 1000 for t, _ in pieces]
        if shown:
            page_first.append(shown[0]); page_last.append(shown[-1]); page_count += len(shown)
        if up:
            up_first.append(up[0]); up_last.append(up[-1]); up_count += len(up)
        rows.append([f"pane {pane} ({endpoint})", f"{len(shown)}/{len(pieces)}", len(dom),
                     ms(statistics.median(lag_ws) if lag_ws else float("nan")),
                     ms(statistics.median(lag_dom) if lag_dom else float("nan")), ms(pct(lag_dom, 0.95)),
                     ms(max(lag_dom) if lag_dom else float("nan")),
                     ms(statistics.median(lag_raf) if lag_raf else float("nan")), ms(pct(lag_raf, 0.95)),
                     ms(max(lag_raf) if lag_raf else float("nan")),
                     f"{rate(up, len(up)):.0f}", f"{rate(shown, len(shown)):.0f}"])
    rows.append(["**all panes**", f"{page_count}/{up_count}", sum(len(v) for v in data["dom"].values()),
                 ms(statistics.median(all_ws) if all_ws else float("nan")),
                 f"**{ms(statistics.median(all_dom) if all_dom else float('nan'))}**", f"**{ms(pct(all_dom, 0.95))}**",
                 f"**{ms(max(all_dom) if all_dom else float('nan'))}**",
                 ms(statistics.median(all_raf) if all_raf else float("nan")), ms(pct(all_raf, 0.95)),
                 ms(max(all_raf) if all_raf else float("nan")),
                 f"{(up_count - len(up_first)) / ((max(up_last) - min(up_first)) / 1000):.0f}" if up_first else "n/a",
                 f"{(page_count - len(page_first)) / ((max(page_last) - min(page_first)) / 1000):.0f}" if page_first else "n/a"])
    print(table(["pane", "pieces shown", "DOM updates", "WS arrival p50", "DOM p50", "DOM p95", "DOM max",
                 "frame p50", "frame p95", "frame max", "vendor tok/s", "page tok/s"], rows))

    complete = page_count == up_count == args.panes * args.pieces
    worst = max(all_dom) if all_dom else float("inf")
    p95 = pct(all_dom, 0.95)
    print(f"\nTarget: DOM < {TARGET_MS} ms behind the vendor — p95 {ms(p95)} ms, max {ms(worst)} ms: "
          f"**{'met' if complete and p95 < TARGET_MS else 'NOT met'}** at p95, "
          f"**{'met' if complete and worst < TARGET_MS else 'NOT met'}** at max"
          f"{'' if complete else ' (not every piece reached the page)'}.")

    start, stop = data["started"], data["stopped"]
    long = [(t, d) for t, d in data["longtasks"] if start <= t <= stop]
    print("\n## Browser main thread during the stream\n")
    if data["longtaskError"]:
        print(f"Long tasks unavailable: {data['longtaskError']}")
    else:
        print(table(["window (s)", "long tasks (> 50 ms)", "total long-task ms", "longest ms"],
                    [[f"{(stop - start) / 1000:.2f}", len(long), ms(sum(d for _, d in long)),
                      ms(max((d for _, d in long), default=0))]]))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
