"""Markdown for the playground: a streaming answer rendered block by block (LiveMarkdown)."""
from __future__ import annotations

import pytest

from playground.render import LiveMarkdown, markdown_html

DOCUMENT = """# Title

First paragraph with **bold**, `code` and a [link](https://example.com).

- a tight list
- of two items

1. a loose list

2. numbered

Text right after it.

```python
def f():

    return "<b>not bold</b>"
```

~~~
tilde fence

~~~

    indented code

    with a blank line

| a | b |
|---|---|
| 1 | 2 |

> a quote
> on two lines

Last line without a newline"""


def stream(text: str, step: int) -> tuple[list[str], str, LiveMarkdown]:
    """Feed ``text`` ``step`` characters at a time, flushing after each: (appended parts, last tail)."""
    live, appended, tail = LiveMarkdown(), [], ""
    for at in range(0, len(text), step):
        live.add(text[at:at + step])
        finished, tail = live.flush()
        appended.append(str(finished))
    return appended, str(tail), live


@pytest.mark.parametrize("step", [1, 2, 5, 13, 64])
def test_the_streamed_blocks_add_up_to_the_whole_rendering(step):
    appended, tail, _ = stream(DOCUMENT, step)
    assert "".join(appended) + tail == markdown_html(DOCUMENT)


def test_a_fenced_block_is_never_cut_even_across_blank_lines():
    text = "Intro.\n\n```\nline one\n\nNot a paragraph\n\nstill code\n```\n\nAfter."
    opening, closing = text.index("```"), text.rindex("```")
    for end in range(len(text) + 1):
        live = LiveMarkdown()
        live.add(text[:end])
        live.flush()
        assert not opening < live.done <= closing, (end, live.done)
    assert live.done == text.index("After.")  # once closed, the code block is finished


@pytest.mark.parametrize("text", ["- a\n\n- b", "1. a\n\n2. b", "- a\n\n  continued", "Para.\n\n12"])
def test_a_list_item_or_indented_line_after_a_blank_line_stays_in_the_tail(text):
    # A later item or an indented line changes the list before it; "12" may still become "12. an item".
    live = LiveMarkdown()
    live.add(text)
    live.flush()
    assert live.done == 0


def test_a_paragraph_after_a_blank_line_finishes_the_blocks_before_it():
    live = LiveMarkdown()
    live.add("- a\n- b\n\nNext")
    finished, tail = live.flush()
    assert str(finished) == "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n" and str(tail) == "<p>Next</p>\n"


def test_each_tick_renders_only_the_open_block_however_long_the_answer():
    paragraph = "A sentence of the answer, repeated to make a paragraph. " * 6 + "\n\n"
    live = LiveMarkdown()
    for _ in range(300):
        live.add(paragraph)
        live.flush()
    live.add("The last paragraph is being")
    finished, tail = live.flush()
    assert len(live.text) > 100_000
    assert str(tail) == "<p>The last paragraph is being</p>\n" and len(finished) < 2 * len(paragraph)


def test_streamed_markdown_is_sanitised_however_it_is_cut():
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, str, str]] = []

        def handle_starttag(self, tag, attrs):
            self.found += [(tag, "", "")] + [(tag, name, value or "") for name, value in attrs]

    text = ('Click [me](javascript:alert(1)) <img src=x onerror=alert(2)> <script>alert(3)</script>\n\n'
            '![pic](https://example.com/a.png) <a href="https://x" onclick="y">z</a> [ok](https://example.com)')
    for step in (1, 3, 7):
        appended, tail, _ = stream(text, step)
        parser = Tags()
        for html in [*appended, tail]:
            parser.feed(html)
        assert not [t for t in parser.found if t[0] == "script" or t[1].startswith("on") or t[1] == "src"
                    or t[2].lower().startswith(("javascript:", "data:"))], parser.found
        assert ("a", "href", "https://example.com") in parser.found  # ordinary links still work
