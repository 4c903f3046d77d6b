// The SQL page: Ctrl+Enter (Cmd+Enter) runs the query; an example fills the editor.
// Running, progress, Cancel and the results are htmx (templates/pages/_sql_run.html).
"use strict";

(function () {
  const form = document.getElementById("sql-form");
  const editor = document.getElementById("sql-editor");
  if (!form || !editor) return;

  editor.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  document.addEventListener("click", (event) => {
    const example = event.target.closest("[data-sql]");
    if (!example) return;
    editor.value = example.dataset.sql;
    editor.focus();
  });
})();
