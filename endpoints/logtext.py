"""Text from users in log lines, on one line.

A request can carry newlines and other control characters in anything it names
(``client_request_id``, a path, an endpoint name); written raw, they would start forged log lines.
:func:`escape` writes them as Python escapes (``\\n``, ``\\r``, ``\\x1b``, ``\\u2028``), leaving
printable text, non-ASCII included, as it is. The query log escapes its fields; the server's log
formatter (:class:`OneLineFormatter`, in ``settings.LOGGING``) escapes every message as well, for
log lines anywhere (Django's, libraries') that include request text. Tracebacks stay multi-line.
"""
from __future__ import annotations

import logging


def escape(text: object) -> str:
    """``text`` with every non-printable character written as its Python escape."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class OneLineFormatter(logging.Formatter):
    """A formatter whose message part is always one line (see the module doc)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))
