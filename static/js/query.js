// Fondasi pages: copy buttons (here and in the playground's Get code), code-sample tabs and the Query dialog.
// The dialog sends the editor's JSON to POST /endpoints/<name>/query (the API's own query path)
// and shows the answer. Response text only ever reaches the page through textContent.
"use strict";

(function () {
  const $ = (selector, root = document) => root.querySelector(selector);

  // --- copy buttons: <button data-copy="#id"> copies that element's value or text -------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    // Looked up inside the nearest [data-copy-scope] (a Get code box, one per pane), else the page.
    const source = $(button.dataset.copy, button.closest("[data-copy-scope]") || document);
    if (!source) return;
    const text = "value" in source ? source.value : source.textContent;
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(text.trimEnd());
      button.textContent = "Copied";
    } catch {
      // No clipboard API (plain http on another host): select it so Ctrl+C works.
      if (source.select) source.select(); else getSelection().selectAllChildren(source);
      button.textContent = "Press Ctrl+C";
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });

  // --- tabs: the WAI-ARIA pattern, arrow keys move between tabs ---------------------------------
  for (const tabs of document.querySelectorAll("[data-tabs]")) {
    const list = [...tabs.querySelectorAll("[role=tab]")];
    const select = (tab) => {
      for (const t of list) {
        const on = t === tab;
        t.setAttribute("aria-selected", String(on));
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      }
    };
    tabs.addEventListener("click", (e) => { const t = e.target.closest("[role=tab]"); if (t) select(t); });
    tabs.addEventListener("keydown", (e) => {
      const i = list.indexOf(document.activeElement);
      if (i < 0) return;
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      const next = step ? list[(i + step + list.length) % list.length]
        : e.key === "Home" ? list[0] : e.key === "End" ? list[list.length - 1] : null;
      if (next) { e.preventDefault(); select(next); next.focus(); }
    });
  }

  // --- the Query dialog -----------------------------------------------------------------------
  const dialog = $("#query-dialog");
  if (!dialog) return;
  const editor = $("#query-body", dialog);
  const output = $("#query-response", dialog);
  const statusBadge = $("#query-status", dialog);
  const latency = $("#query-latency", dialog);
  const errorLine = $("#query-error", dialog);
  const streamView = $("#stream-view", dialog);
  const streamText = $("#stream-text", dialog);
  const reasoningBox = $("#stream-reasoning-box", dialog);
  const reasoningText = $("#stream-reasoning", dialog);
  const loadingLine = $("#query-loading", dialog);
  const streamEvents = $("#stream-events", dialog);
  const sendButton = $("#send-request", dialog);
  const stopButton = $("#stop-request", dialog);
  const csrf = $("input[name=csrfmiddlewaretoken]", dialog).value;
  let controller = null;

  $("#open-query").addEventListener("click", () => { dialog.showModal(); editor.focus(); });
  $("[data-close-dialog]", dialog).addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => controller && controller.abort());

  // Arrays of numbers (embeddings) stay on one line; everything else is indented.
  const pretty = (value) => JSON.stringify(value, null, 2)
    .replace(/\[\n\s*(-?\d[^\[\]{}"]*?)\n\s*\]/g, (_, inner) => "[" + inner.replace(/,\n\s*/g, ", ") + "]");

  $("#format-json", dialog).addEventListener("click", () => {
    try { editor.value = pretty(JSON.parse(editor.value)); showError(""); }
    catch (e) { showError("The request is not valid JSON: " + e.message); }
  });

  $("#show-example", dialog).addEventListener("click", () => {
    // Read at click time: saving an example swaps the picker and its data in.
    const examples = JSON.parse($("#examples-data", dialog).textContent);
    const picked = $("#example-select", dialog);
    const example = picked ? examples.find((x) => String(x.id) === picked.value) : examples[0];
    if (example) {
      editor.value = pretty(example.body);
      $("#example-name", dialog).value = "";
    } else {
      editor.value = editor.dataset.default;
      $("#save-example-status", dialog).textContent = "This endpoint has no example inputs yet: here is a starting request for its task.";
    }
    editor.focus();
  });

  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); }
  });
  sendButton.addEventListener("click", send);
  stopButton.addEventListener("click", () => controller && controller.abort());

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = !message;
  }

  function showStatus(response) {
    statusBadge.hidden = false;
    statusBadge.textContent = `${response.status} ${response.statusText}`.trim();
    statusBadge.className = "badge " + (response.ok ? "ready" : "failed");
  }

  // A readable line from the API's error body: {"error_code": …, "message": …}.
  const errorMessage = (body, fallback) =>
    body && typeof body === "object" && body.message
      ? imageProblem(body.message) || `${body.error_code || "ERROR"}: ${body.message}` : fallback;
  // An image error in a person's words, numbered from 1: the API's "Image 0 …" counts the request's
  // image parts from 0 and names the wire format (endpoints/images.py words the same for uploads).
  function imageProblem(message) {
    const found = /^Image (\d+)((?:'s| ).*)$/s.exec(message);
    if (!found) return "";
    const name = "Image " + (Number(found[1]) + 1);
    if (/^ (is not a JPEG, PNG, GIF or WebP image|could not be read)/.test(found[2])) {
      return name + " is not a supported image (JPEG, PNG, GIF or WebP).";
    }
    return name + found[2];
  }

  async function send() {
    if (controller) return;  // one request at a time
    controller = new AbortController();
    sendButton.disabled = true;
    stopButton.hidden = false;
    showError("");
    statusBadge.hidden = true;
    latency.textContent = "Waiting for the answer…";
    output.textContent = "";
    output.hidden = false;
    streamView.hidden = true;
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    const answered = { yes: false };
    watchLoading(answered);
    try {
      // The editor's text is sent as written: the server reports bad JSON like the API does.
      const response = await fetch(dialog.dataset.queryUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: editor.value,
        signal: controller.signal,
        credentials: "same-origin",
      });
      answered.yes = true;
      loadingLine.hidden = true;
      showStatus(response);
      revealResponse();
      if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        await readStream(response, elapsed);
      } else {
        const raw = await response.text();
        latency.textContent = `${elapsed()} ms`;
        let body = null;
        try { body = JSON.parse(raw); output.textContent = pretty(body); }
        catch { output.textContent = raw; }
        if (!response.ok) showError(errorMessage(body, `The server answered ${response.status}.`));
      }
    } catch (e) {
      if (e.name === "AbortError") {
        latency.textContent = `Stopped after ${elapsed()} ms`;
      } else {
        latency.textContent = "";
        showError("Could not reach Fondasi: " + e.message);
      }
    } finally {
      answered.yes = true;
      loadingLine.hidden = true;
      controller = null;
      sendButton.disabled = false;
      stopButton.hidden = true;
    }
  }

  // While an embedded model loads its weights (the first request after start), say so instead of
  // only waiting; polled until the answer starts or the model is loaded.
  async function watchLoading(answered) {
    for (let first = true; !answered.yes; first = false) {
      if (!first) await new Promise((resolve) => setTimeout(resolve, 500));
      let loading = false;
      try {
        const r = await fetch(dialog.dataset.modelStateUrl, { credentials: "same-origin" });
        loading = r.ok && (await r.json()).loading === true;
      } catch { return; }
      if (answered.yes) return;
      loadingLine.hidden = !loading;
      if (!loading) return;
    }
  }

  // On a narrow screen the response is below the request: bring it into view as the answer starts.
  function revealResponse() {
    const box = $("#response-title", dialog);
    const rect = box.getBoundingClientRect();
    if (rect.top < 0 || rect.top > window.innerHeight * 0.6) box.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  // The answer's text and its reasoning, kept apart. Reasoning arrives as reasoning blocks, or
  // inside <think>…</think> in plain text: the tags themselves are never shown.
  function splitter() {
    let raw = "";
    let reasoning = "";
    let answer = "";
    const show = () => {
      // Text inside <think>…</think> (or after an unclosed <think>) is reasoning; the rest is answer.
      let text = raw, thought = "", said = "";
      for (;;) {
        const open = text.indexOf("<think>");
        if (open < 0) { said += text; break; }
        said += text.slice(0, open);
        const close = text.indexOf("</think>", open);
        if (close < 0) { thought += text.slice(open + 7); break; }
        thought += text.slice(open + 7, close);
        text = text.slice(close + 8);
      }
      said = said.replace(/<\/?think>/g, "");
      const allReasoning = (reasoning + thought).replace(/^\s+/, "");
      reasoningText.textContent = allReasoning;
      reasoningBox.hidden = !allReasoning;
      streamText.textContent = (answer + said).replace(/^\s+/, "");
    };
    return {
      text(delta) { raw += delta; show(); },
      reasoning(delta) { reasoning += delta; show(); },
      answer(delta) { answer += delta; show(); },
    };
  }

  // Server-sent events: each "data: …" block is shown as it arrives; text deltas are joined above.
  async function readStream(response, elapsed) {
    streamView.hidden = false;
    streamText.textContent = "";
    reasoningText.textContent = "";
    reasoningBox.hidden = true;
    const parts = splitter();
    streamEvents.replaceChildren();
    output.hidden = true;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let count = 0;
    let first = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;  // a keepalive
        if (first === null) first = elapsed();
        count += 1;
        const item = document.createElement("li");
        item.textContent = data;
        streamEvents.append(item);
        item.scrollIntoView({ block: "nearest" });
        if (data === "[DONE]") continue;
        let chunk;
        try { chunk = JSON.parse(data); } catch { continue; }
        if (chunk.error || chunk.error_code) { showError(errorMessage(chunk, "The stream ended with an error.")); continue; }
        for (const choice of chunk.choices || []) {
          const delta = choice.delta ? choice.delta.content : choice.text;
          if (typeof delta === "string") parts.text(delta);
          else if (Array.isArray(delta)) {  // reasoning and text blocks
            for (const part of delta) {
              if (part.type === "reasoning") parts.reasoning((part.summary || []).map((s) => s.text || "").join(""));
              else if (typeof part.text === "string") parts.answer(part.text);
            }
          }
        }
      }
      latency.textContent = `first event ${first ?? "–"} ms · ${count} events so far`;
    }
    latency.textContent = `first event ${first ?? "–"} ms · total ${elapsed()} ms · ${count} events`;
  }
})();
