// The AI Playground's page script: a WebSocket to /ws/playground/, panes, attachments, Get code.
// Model and user text arrives two ways only: raw reasoning deltas appended as text nodes (never
// parsed as HTML), and HTML the server rendered through autoescaping and its Markdown sanitiser
// (partials, and the streaming answer's finished blocks and open tail).
(() => {
  "use strict";
  const root = document.getElementById("playground");
  if (!root) return;
  const $ = (sel, el = document) => el.querySelector(sel);
  const $$ = (sel, el = document) => Array.from(el.querySelectorAll(sel));
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] ||
    JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  const prompt = $("#prompt"), sendBtn = $("#send"), stopBtn = $("#stop"), status = $("#ws-status");
  const composerError = $("#composer-error"), attachments = $("#attachments");
  let socket = null, busy = false;
  const timers = {};

  // --- the socket -----------------------------------------------------------------------
  function connect() {
    socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/playground/");
    socket.onopen = () => { status.textContent = ""; };
    socket.onclose = (e) => {
      setBusy(false);
      if (e.code === 4401) { status.textContent = "Signed out: reload the page to sign in."; return; }
      status.textContent = "Connection lost; reconnecting…";
      setTimeout(connect, 1000);
    };
    socket.onmessage = (e) => handle(JSON.parse(e.data));
  }

  function handle(msg) {
    const thread = msg.pane !== undefined ? document.getElementById("thread-" + msg.pane) : null;
    switch (msg.type) {
      case "conversation":
        root.dataset.conversation = msg.id;
        history.replaceState(null, "", "?c=" + msg.id);
        refreshConversations();
        break;
      case "turn":
        if (!thread) break;
        thread.insertAdjacentHTML("beforeend", msg.html);  // server-rendered, autoescaped
        layoutRows();
        thread.lastElementChild.scrollIntoView({ block: "nearest" });
        showModelLoading(thread);
        break;
      case "retract": {  // a turn taken away (Regenerate, edit and resend): its answer is replaced
        const old = document.getElementById(msg.id);
        if (old) old.remove();
        layoutRows();
        break;
      }
      case "delta": {
        const turn = thread && $(".turn[data-streaming]:last-of-type", thread);
        if (!turn) break;
        if (msg.reasoning) {
          const details = $(".reasoning", turn);
          details.hidden = false;
          $(".reply", turn).classList.add("has-reasoning");
          $(".reasoning-text", details).append(msg.reasoning);  // a text node
          startTimer(turn);
        }
        if (msg.tail !== undefined) {
          stopTimer(turn.id);
          showAnswer($(".answer-live", turn), msg.append, msg.tail);
        }
        break;
      }
      case "done": {
        stopTimer(msg.id);
        const turn = document.getElementById(msg.id);
        if (turn) turn.outerHTML = msg.html;  // server-rendered: autoescaped + sanitised Markdown
        break;
      }
      case "layout":
        root.dataset.layoutSaved = msg.conversation;
        break;
      case "idle":
        setBusy(false);
        refreshConversations();
        break;
      case "error":
        composerError.textContent = msg.message;
        if (!Object.keys(timers).length) setBusy(false);
        break;
    }
  }

  // While the pane's embedded model loads its weights (the first request after start), its streaming
  // turn says so (polled until loaded; the first answer text replaces the note).
  async function showModelLoading(thread) {
    const turn = $(".turn[data-streaming]:last-of-type", thread), pane = thread.closest(".pane");
    if (!turn || !pane) return;
    const url = "/endpoints/" + encodeURIComponent(pane.dataset.endpoint) + "/model-state";
    let note = null;
    while (turn.isConnected && turn.hasAttribute("data-streaming")) {
      let loading = false;
      try { const r = await fetch(url, { credentials: "same-origin" }); loading = r.ok && (await r.json()).loading === true; }
      catch { loading = false; }
      if (!loading) break;
      const live = $(".answer-live", turn);
      if (!note && live && !live.childNodes.length) {
        note = document.createElement("p");
        note.className = "muted loading-model";
        note.setAttribute("role", "status");
        note.textContent = "Loading the model… (first request after start)";
        live.append(note);
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (note) note.remove();
  }

  // The streaming answer: finished blocks stay, the open tail (the nodes after them) is replaced.
  function showAnswer(live, append, tail) {
    const kept = Number(live.dataset.kept || 0);
    while (live.childNodes.length > kept) live.lastChild.remove();
    if (append) live.insertAdjacentHTML("beforeend", append);  // server-sanitised Markdown
    live.dataset.kept = live.childNodes.length;
    live.insertAdjacentHTML("beforeend", tail);  // server-sanitised Markdown
  }

  function startTimer(turn) {
    if (timers[turn.id]) return;
    const started = performance.now(), label = $(".thinking-timer", turn);
    timers[turn.id] = setInterval(() => {
      label.textContent = "thinking… " + ((performance.now() - started) / 1000).toFixed(1) + " s";
    }, 100);
  }
  function stopTimer(id) { clearInterval(timers[id]); delete timers[id]; }

  function setBusy(on) {
    busy = on;
    sendBtn.disabled = on;
    stopBtn.disabled = !on;
  }

  // --- sending ----------------------------------------------------------------------------
  function paneSettings(pane) {
    const field = (name) => $(`[name="${name}"]`, pane);
    const num = (name) => (field(name).value.trim() === "" ? null : Number(field(name).value));
    return {
      system: field("system").value,
      params: {
        temperature: num("temperature"), max_tokens: num("max_tokens"), top_p: num("top_p"),
        stop: readStops(field("stop").value),
        thinking: field("thinking").checked, budget_tokens: num("budget_tokens"),
      },
    };
  }
  // The Stop field: one sequence per line; inside one, \n is a newline, \t a tab and \\ a
  // backslash (the server writes the saved list back the same way: playground/views.py stop_text).
  function readStops(text) {
    return text.split("\n").filter((line) => line !== "")
      .map((line) => line.replace(/\\([\\nt])/g, (_, c) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\")));
  }
  // What a pane sends is what its own fields show ("Same settings" copies them into every pane).
  function paneRequest(pane) {
    return { pane: Number(pane.dataset.pane), endpoint: pane.dataset.endpoint, ...paneSettings(pane) };
  }
  function copySettings(from, to) {
    $$(".settings [name]", from).forEach((src) => {
      const el = $(`.settings [name="${src.name}"]`, to);
      if (!el || el === src) return;
      if (el.type === "checkbox") el.checked = src.checked; else el.value = src.value;
    });
  }
  // The page's panes (endpoints, settings, which are shown) are kept in the open conversation.
  let layoutTimer = null;
  function saveLayout(delay = 0) {
    clearTimeout(layoutTimer);
    layoutTimer = setTimeout(() => {
      if (!conversationId() || !socket || socket.readyState !== WebSocket.OPEN) return;
      root.dataset.layoutSaved = "";
      socket.send(JSON.stringify({ type: "layout", conversation: conversationId(), panes: $$(".pane").map(paneRequest) }));
    }, delay);
  }
  // A new, empty conversation with the same panes and settings (after "New conversation", or when
  // the open conversation was deleted).
  function startFresh(url) {
    root.dataset.conversation = "";
    $$(".pane .thread").forEach((t) => t.replaceChildren());
    setEditing(false);
    layoutRows();
    $$(".pane .code").forEach((c) => c.replaceChildren());
    composerError.textContent = "";
    history.replaceState(null, "", url);
    refreshConversations();
  }
  const imageIds = () => $$("[data-image-id]", attachments).map((el) => el.dataset.imageId);
  const conversationId = () => (root.dataset.conversation ? Number(root.dataset.conversation) : null);

  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    composerError.textContent = "";
    const panes = $$(".pane");
    if (!panes.length) { composerError.textContent = "Add a pane first."; return; }
    if (!prompt.value.trim() && !imageIds().length) { composerError.textContent = "Write a prompt first."; return; }
    if (!socket || socket.readyState !== WebSocket.OPEN) { composerError.textContent = "Not connected yet; try again in a moment."; return; }
    socket.send(JSON.stringify({
      type: "send", conversation: conversationId(), prompt: prompt.value, images: imageIds(), panes: panes.map(paneRequest),
      replace_last: editing && conversationId() !== null,
    }));
    setEditing(false);
    prompt.value = "";
    attachments.replaceChildren();
    root.classList.remove("has-images");
    setBusy(true);
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); if (!busy) $("#composer").requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => socket && socket.send(JSON.stringify({ type: "stop" })));
  // Esc stops the answers (and, when idle, leaves editing the last prompt).
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.defaultPrevented) return;
    if (busy && socket) socket.send(JSON.stringify({ type: "stop" }));
    else if (editing) { setEditing(false); prompt.value = ""; }
  });
  $$(".sample").forEach((b) => b.addEventListener("click", () => { prompt.value = b.dataset.prompt; prompt.focus(); }));

  // --- panes ------------------------------------------------------------------------------
  $("#add-pane").addEventListener("click", async () => {
    // A removed pane's number is never reused: it names that pane's thread in the conversation.
    const numbers = $$(".pane").map((p) => Number(p.dataset.pane));
    const next = Math.max(Number(root.dataset.nextPane || 0), ...numbers.map((n) => n + 1));
    root.dataset.nextPane = next + 1;
    const url = root.dataset.paneUrl + "?" + new URLSearchParams({ endpoint: $("#new-endpoint").value, pane: next });
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.ok) {
      $("#panes").insertAdjacentHTML("beforeend", await response.text());
      const panes = $$(".pane");
      if ($("#same-settings").checked && panes.length > 1) copySettings(panes[0], panes[panes.length - 1]);
      activeTab = panes.length - 1;
      refreshPanes();
      saveLayout();
    } else composerError.textContent = await response.text();
  });
  $("#new-conversation").addEventListener("click", (e) => {
    if (busy) return;  // the link itself: the page reloads, the server stops and saves the answers
    e.preventDefault();
    startFresh(location.pathname + (conversationId() ? "?layout=" + conversationId() : ""));
  });
  // Deleting the open conversation leaves a new, empty one with the same panes.
  // (htmx fires beforeSwap on the list, naming the button; after the swap the button is gone)
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const button = (e.detail.requestConfig && e.detail.requestConfig.elt) || {};
    if (e.detail.xhr.status !== 200 || !button.classList || !button.classList.contains("delete-conversation")) return;
    if (button.dataset.conversation !== root.dataset.conversation) return;
    if (busy && socket) socket.send(JSON.stringify({ type: "stop" }));
    startFresh(location.pathname);
  });
  $("#same-settings").addEventListener("change", (e) => {
    if (!e.target.checked) return;
    const panes = $$(".pane");
    panes.slice(1).forEach((pane) => copySettings(panes[0], pane));
    saveLayout();
  });
  root.addEventListener("change", (e) => { if (e.target.closest(".pane .settings")) saveLayout(300); });
  root.addEventListener("input", (e) => { if (e.target.closest(".pane .settings")) $$(".pane").forEach(updateChip); });
  root.addEventListener("click", async (e) => {
    const pane = e.target.closest(".pane");
    if (e.target.closest(".remove-pane")) { pane.remove(); refreshPanes(); saveLayout(); }
    else if (e.target.closest(".close-code")) $(".code", pane).replaceChildren();
    else if (e.target.closest(".remove-image")) {
      e.target.closest(".thumb").remove();
      clearImageMessages();  // what the last attach said goes with the images it was about
      root.classList.toggle("has-images", imageIds().length > 0);
    } else if (e.target.closest(".get-code")) {
      const response = await fetch(root.dataset.codeUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
        body: JSON.stringify({ ...paneRequest(pane), conversation: conversationId(), prompt: prompt.value, images: imageIds() }),
      });
      $(".code", pane).innerHTML = await response.text();  // server-rendered, autoescaped
    } else if (e.target.closest(".regenerate")) {
      if (busy || !conversationId()) return;
      if (!socket || socket.readyState !== WebSocket.OPEN) { composerError.textContent = "Not connected yet; try again in a moment."; return; }
      composerError.textContent = "";
      socket.send(JSON.stringify({ type: "regenerate", conversation: conversationId(), pane: paneRequest(pane) }));
      setBusy(true);
    } else if (e.target.closest(".edit-prompt")) {
      const text = $(".prompt-text", e.target.closest(".turn"));
      prompt.value = text ? text.textContent : "";
      setEditing(true);
      prompt.focus();
    } else if (e.target.closest(".pane-tabs [data-tab]")) {
      showTab(Number(e.target.closest("[data-tab]").dataset.tab));
    }
  });
  // Switching a pane's endpoint keeps its thread: the next prompt goes to the new endpoint with it.
  root.addEventListener("change", (e) => {
    const select = e.target.closest("select.pane-endpoint");
    if (!select) return;
    const pane = select.closest(".pane"), option = select.selectedOptions[0];
    pane.dataset.endpoint = select.value;
    if (option && option.dataset.vision) pane.dataset.vision = option.dataset.vision;
    const badge = $(".pane-head .badge", pane);
    if (badge && option && option.dataset.vision) {
      const sees = option.dataset.vision === "true";
      badge.textContent = sees ? "sees images" : "text only";
      badge.classList.toggle("ready", sees);
    }
    updateChip(pane);
    saveLayout();
  });
  // "Same settings for all panes": an edit in one pane is mirrored into the others.
  root.addEventListener("input", (e) => {
    if (!$("#same-settings").checked || !e.target.closest(".settings")) return;
    const name = e.target.name;
    $$(`.pane .settings [name="${name}"]`).forEach((el) => {
      if (el === e.target) return;
      if (el.type === "checkbox") el.checked = e.target.checked; else el.value = e.target.value;
    });
  });

  // --- images: picker, drag-and-drop, paste ---------------------------------------------
  async function upload(files) {
    const images = Array.from(files).filter((f) => f.size >= 0);
    if (!images.length) return;
    clearImageMessages();
    if (!seesImages()) {
      composerError.textContent = "No pane's endpoint can see images: add a pane marked “sees images” to attach one.";
      return;
    }
    const form = new FormData();
    images.forEach((f) => form.append("images", f, f.name || "pasted.png"));
    composerError.textContent = "";
    status.textContent = "Preparing images…";
    const response = await fetch(root.dataset.uploadUrl, {
      method: "POST", body: form, credentials: "same-origin", headers: { "X-CSRFToken": csrf() },
    });
    status.textContent = "";
    attachments.insertAdjacentHTML("beforeend", await response.text());  // server-rendered, autoescaped
    root.classList.toggle("has-images", imageIds().length > 0);
  }
  $("#image-input").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  function clearImageMessages() { $$(".thumb-error, .thumb-note", attachments).forEach((el) => el.remove()); }
  // "Attach image" and "Describe image" only while some pane's endpoint can see images (each pane
  // says data-vision); kept up to date as panes are added, removed or switched to another endpoint.
  const seesImages = () => $$(".pane").some((pane) => pane.dataset.vision === "true");
  function showImageControls() {
    const sees = seesImages();
    $$("[data-needs-vision]").forEach((el) => { el.hidden = !sees; });
  }
  new MutationObserver(showImageControls).observe($("#panes"), {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-vision"],
  });
  showImageControls();
  const composer = $("#composer");
  composer.addEventListener("dragover", (e) => { e.preventDefault(); composer.classList.add("dragging"); });
  composer.addEventListener("dragleave", () => composer.classList.remove("dragging"));
  composer.addEventListener("drop", (e) => {
    e.preventDefault();
    composer.classList.remove("dragging");
    upload(e.dataTransfer.files);
  });
  prompt.addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData.files || []);
    if (files.length) { e.preventDefault(); upload(files); }
  });

  function refreshConversations() {
    const url = root.dataset.conversationsUrl + "?current=" + (root.dataset.conversation || "");
    if (window.htmx) htmx.ajax("GET", url, { target: "#conversations" });
  }

  // --- the comparison layout: letters, chips, rows, tabs -----------------------------------
  // Each pane is labelled A, B, C… (its place on the page) with a chip of what it sends, so two panes
  // of the same model are told apart at a glance. On a phone the letters are tabs: one pane shown.
  let activeTab = 0, editing = false;
  const letter = (i) => (i < 26 ? String.fromCharCode(65 + i) : "P" + (i + 1));
  function updateChip(pane) {
    const { params } = paneSettings(pane), chip = $(".pane-chip", pane);
    if (!chip) return;
    const shown = (v) => (v === null || Number.isNaN(v) ? "default" : String(v));
    chip.textContent = [pane.dataset.endpoint, "temp " + shown(params.temperature), "max " + shown(params.max_tokens),
      params.thinking ? "thinking " + shown(params.budget_tokens) : "no thinking"].join(" · ");
  }
  function layoutRows() {  // the panes' grid: their tops, then one row per turn of the longest thread
    const turns = Math.max(0, ...$$(".pane .thread").map((t) => t.children.length));
    $("#panes").style.setProperty("--rows", String(1 + turns));
  }
  function refreshPanes() {
    const panes = $$(".pane");
    activeTab = Math.min(Math.max(activeTab, 0), Math.max(panes.length - 1, 0));
    let tabs = $("#pane-tabs");
    if (!tabs) {
      tabs = document.createElement("div");
      tabs.id = "pane-tabs";
      tabs.className = "pane-tabs";
      tabs.setAttribute("role", "tablist");
      tabs.setAttribute("aria-label", "Panes");
      $("#panes").before(tabs);
    }
    tabs.replaceChildren(...panes.map((pane, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.tab = i;
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(i === activeTab));
      b.setAttribute("aria-controls", pane.id);
      b.title = pane.dataset.endpoint;
      b.textContent = letter(i);
      return b;
    }));
    panes.forEach((pane, i) => {
      $(".pane-letter", pane).textContent = letter(i);
      pane.setAttribute("aria-label", "Pane " + letter(i) + ": " + pane.dataset.endpoint);
      pane.classList.toggle("tab-active", i === activeTab);
      updateChip(pane);
    });
    layoutRows();
  }
  function showTab(i) { activeTab = i; refreshPanes(); }
  function setEditing(on) {
    editing = on;
    $("#composer").classList.toggle("editing", on);
    sendBtn.textContent = on ? "Resend" : "Send";
    sendBtn.title = on ? "Send the edited prompt in place of the last turn of every pane (Esc cancels)" : "";
  }

  refreshPanes();
  // A reopened conversation opens at its latest turn.
  const lastTurn = $$(".pane .thread .turn").pop();
  if (lastTurn) lastTurn.scrollIntoView({ block: "start" });
  connect();
})();
