"""Model and user text to HTML for the playground: Markdown through a kept parser and sanitiser.

Every piece of model or user text reaches the page either through Django's template autoescaping
or through :func:`markdown_html` (markdown-it-py with raw HTML off, then nh3's allow-list), never
through string formatting of HTML. A streaming answer is rendered the same way as it grows
(:class:`LiveMarkdown`).
"""
from __future__ import annotations

import re
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


# A line that opens or closes a fenced code block, and a list item's marker.
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_LIST_ITEM = re.compile(r"([-+*]|\d{1,9}[.)])(\s|$)")


class LiveMarkdown:
    """A streaming answer's Markdown as sanitised HTML: finished blocks once, the open tail each time.

    The text is cut before a line that follows a blank line outside a fenced code block and
    starts a new top-level block: at the margin, and neither a list item nor something that may
    still become one. Blocks before the last cut are finished (what follows cannot change
    them): they are rendered once and appended. The rest, the block being written, is rendered
    again at each :meth:`flush` and replaces the previous tail. Each tick so costs the length of
    the tail, not of the whole answer. The finished turn is rendered whole (:func:`turn_html`),
    which settles what the cuts cannot know (a link defined further down).
    """

    def __init__(self) -> None:
        self.text = ""
        self.done = 0  # self.text[:done] is rendered and appended for good
        self.changed = False

    def add(self, text: str) -> None:
        self.text += text
        self.changed = self.changed or bool(text)

    def flush(self) -> tuple[SafeString, SafeString]:
        """(HTML of the blocks finished since the last flush, HTML of the open tail)."""
        cut = self._last_cut()
        finished = markdown_html(self.text[self.done:cut]) if cut > self.done else mark_safe("")
        self.done, self.changed = cut, False
        return finished, markdown_html(self.text[cut:])

    def _last_cut(self) -> int:
        """Where the last block that may still change begins (``done`` if none has ended since)."""
        cut, fence, blank = self.done, None, False
        position = self.done
        for line in self.text[self.done:].split("\n"):
            start, position = position, position + len(line) + 1
            if fence is not None:  # inside a fenced block: only its closing line matters
                closing = _FENCE.fullmatch(line)
                if closing and closing[1][0] == fence[0] and len(closing[1]) >= len(fence) and not closing[2].strip():
                    fence = None
                blank = False
                continue
            if blank and line and not line[0].isspace() and not _may_be_list_item(line):
                cut = start
            opening = _FENCE.match(line)
            if opening and position <= len(self.text):  # a complete line: the fence is open
                fence = opening[1]
            blank = not line.strip()
        return cut


def _may_be_list_item(line: str) -> bool:
    """Whether ``line`` is, or may still grow into, a list item's first line ("12" may become "12. ")."""
    return bool(_LIST_ITEM.match(line)) or line.isdigit()


def turn_html(pane: int, number: int, turn: dict[str, Any]) -> str:
    """One turn of one pane (prompt, images, reasoning, answer, figures) as the page shows it."""
    return render_to_string("playground/_turn.html", {"pane": pane, "number": number, "turn": turn})
