// The SQL page: Ctrl+Enter (Cmd+Enter) runs the query; an example or a past run fills the editor.
// Running, progress, Cancel, the results and the run history are htmx (templates/pages/_sql_*.html).
//
// The editor's text survives a reload: what is typed here is kept in localStorage (per user), and
// the server fills the editor with the text of the run it shows. The newer of the two wins, on the
// server's clock (data-now gives this page's offset to it), so text typed after a run is kept, and
// a run started since in another tab or browser brings its text.
"use strict";

(function () {
  const form = document.getElementById("sql-form");
  const editor = document.getElementById("sql-editor");
  if (!form || !editor) return;

  const key = form.dataset.draftKey;
  const offset = Number(form.dataset.now || 0) ? Number(form.dataset.now) - Date.now() : 0;

  function readDraft() {
    try {
      const draft = JSON.parse(window.localStorage.getItem(key) || "null");
      return draft && typeof draft.text === "string" && typeof draft.at === "number" ? draft : null;
    } catch (error) {
      return null;
    }
  }

  function saveDraft() {
    try {
      window.localStorage.setItem(key, JSON.stringify({ text: editor.value, at: Date.now() + offset }));
    } catch (error) {
      // Storage full or off: the server still has the text of each run.
    }
  }

  const draft = readDraft();
  if (draft && draft.at > Number(editor.dataset.sqlAt || 0)) editor.value = draft.text;

  editor.addEventListener("input", saveDraft);
  form.addEventListener("submit", saveDraft);

  editor.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  document.addEventListener("click", (event) => {
    const filler = event.target.closest("[data-sql]");
    if (!filler) return;
    editor.value = filler.dataset.sql;
    saveDraft();
    editor.focus();
  });

  // The run history marks the run shown in the main slot.
  function markCurrent() {
    const shown = document.querySelector("#sql-run .sql-run");
    const current = shown ? shown.dataset.run : "";
    document.querySelectorAll(".sql-history-item").forEach((item) => {
      if (item.dataset.run === current) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    });
  }
  document.body.addEventListener("htmx:afterSettle", markCurrent);
  markCurrent();
})();
