"""Model and user text to HTML for the playground: Markdown through a kept parser and sanitiser.

Every piece of model or user text reaches the page either through Django's template autoescaping
or through :func:`markdown_html` (markdown-it-py with raw HTML off, then nh3's allow-list), never
through string formatting of HTML.
"""
from __future__ import annotations

from typing import Any

import nh3
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# CommonMark with tables and strikethrough; raw HTML in the text is shown as text, not parsed.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(["table", "strikethrough"])

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "img",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"alt", "title"}, "code": {"class"}, "th": {"style"}, "td": {"style"},
                      "ol": {"start"}}


def markdown_html(text: str) -> SafeString:
    """``text`` as sanitised HTML: safe to put in a page unescaped.

    Images are kept as alt text only (no ``src``: a model must not make the browser fetch URLs);
    links get ``rel="noopener noreferrer nofollow"`` and only http(s)/mailto schemes.
    """
    html = _md.render(text or "")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above


def turn_html(pane: int, number: int, turn: dict[str, Any]) -> str:
    """One turn of one pane (prompt, images, reasoning, answer, figures) as the page shows it."""
    return render_to_string("playground/_turn.html", {"pane": pane, "number": number, "turn": turn})
