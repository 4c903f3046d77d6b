"""SQL with Databricks' ``ai_query`` on embedded DuckDB: one more surface of the one query path.

Every ``ai_query`` row is answered by :func:`endpoints.service.prepare` and then
:meth:`~endpoints.service.Query.result` (chat, completions) or
:meth:`~endpoints.service.Query.embed` (embeddings), exactly as the HTTP APIs answer.

The function, as DuckDB reads it::

    ai_query(endpoint, request
             [, returnType => 'DUCKDB TYPE']
             [, failOnError => true | false]
             [, modelParameters => {'max_tokens': 64, 'temperature': 0} | '{"max_tokens": 64}']
             [, responseFormat => '{"type": "json_object"}' | {'type': 'json_object'}])

- ``endpoint`` is the endpoint's name as a string literal (Databricks requires one too);
  ``request`` is a text expression (a column, ``'Summarise: ' || review``…). Written
  ``"double-quoted"`` on its own, either is a string, as in Databricks' Spark SQL (its examples
  write ``ai_query("endpoint", "text")``), not a DuckDB column name: a column whose name needs
  quotes goes in as part of an expression (``"my column" || ''``) there.
- The optional arguments are named (``=>`` or ``:=``, in any order) or positional in the order
  above: Databricks' ``ai_query(endpoint, request, returnType, failOnError)`` works as written.
- ``modelParameters``: the request's generation parameters (``max_tokens``, ``temperature``,
  ``top_p``, ``stop``, ``seed``, ``extra_params``…), as a DuckDB struct or a JSON object string.
  Databricks' ``named_struct(...)`` is Spark SQL; DuckDB writes it ``{'max_tokens': 64}``.
- ``responseFormat`` (chat endpoints): the API's ``response_format`` (``{"type": "json_object"}``
  or ``{"type": "json_schema", "json_schema": {...}}``) as a JSON string or a struct; the answer
  is then JSON.
- ``returnType`` (a literal): DuckDB's type for the answer, in DuckDB's syntax (``INTEGER``,
  ``DOUBLE[]``, ``STRUCT(label VARCHAR, score DOUBLE)``); text answers are cast to it, through JSON
  for nested types. Spark DDL (``ARRAY<FLOAT>``) is not DuckDB's and is refused by name.
- ``failOnError`` (a literal, default true): false makes each row a
  ``STRUCT(result <type>, errorMessage VARCHAR)``, as Databricks does: a failed row gets a NULL
  result and its error instead of ending the query. A positional NULL for ``returnType`` or
  ``failOnError`` means its default.

Returns ``VARCHAR`` (the first choice's text) for chat and completions endpoints and ``FLOAT[]``
for embeddings endpoints, unless ``returnType`` says otherwise. A NULL request gives NULL.

How a query runs: ``ai_query`` calls are found with DuckDB's own tokenizer and each is renamed to
a macro of its kind (task, return type, failOnError) that takes the optional arguments by name and
calls a vectorised (Arrow) Python UDF. DuckDB hands the UDF whole batches of rows (up to 2048);
the batch's rows are sent concurrently on the process's SQL event loop (:func:`requests_loop`),
at most ``concurrency`` at a time per endpoint (``SQL_CONCURRENCY``, default 8), and come back
in row order. A 429 (a busy local model's full queue, a vendor's rate limit) is retried after its
``Retry-After``. Embeddings rows go up to :data:`EMBED_CHUNK` per request; when one fails, its rows
are sent one by one so that only the bad one fails. :meth:`Engine.cancel` interrupts DuckDB
and cancels the requests in flight, which stops generation upstream.

Limits, so that one query cannot take the server down: results keep at most ``SQL_MAX_ROWS`` rows
(10,000) and ``SQL_MAX_RESULT_BYTES`` (32 MiB, Arrow's size of the kept rows): rows are fetched
from DuckDB in batches and fetching stops at either limit (DuckDB stops computing past it), with
:attr:`SqlResult.note` saying which limit cut the result. A query runs at most ``timeout`` seconds
(``SQL_TIMEOUT_SECONDS``, 300; the management command has none unless asked): then it is
interrupted like a cancel and fails with "stopped after N s". DuckDB itself works within
``SQL_MEMORY_LIMIT`` (DuckDB's ``memory_limit``, 1 GB).

Files and Fondasi's database: an engine with ``external_access`` (the management command, a
superuser on the page) reads and writes files as DuckDB does (``FROM 'reviews.csv'``) and, when
Fondasi's database is an SQLite file and DuckDB's ``sqlite`` extension is installed, sees it
read-only as the schema ``fondasi`` (``SELECT name, task FROM fondasi.endpoints_servingendpoint``).
The extension is not bundled with DuckDB's wheel and nothing is downloaded at run time: without
it the schema is absent and an error that names it says why. Other engines get DuckDB with
external access off: no files, no extensions, no attached databases.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import datetime
import decimal
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Awaitable, Callable, Iterator, TypeVar

import duckdb
import pyarrow as pa
from django.conf import settings

from . import registry, service
from .errors import ServingError, invalid
from .schemas import CHAT, COMPLETIONS, EMBEDDINGS

log = logging.getLogger("fondasi.sql")

T = TypeVar("T")

DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_RESULT_BYTES = 32 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_MEMORY_LIMIT = "1GB"
#: Rows fetched from DuckDB at a time: the result-size limits are checked between batches.
FETCH_ROWS = 256
#: Embeddings rows sent in one request (the local encoder is much faster on a batch).
EMBED_CHUNK = 64
#: Tries of a row answered 429 before it fails (each waits the answer's Retry-After).
MAX_ATTEMPTS = 10
#: The arguments of ai_query, in their positional order.
ARGUMENTS = ("endpoint", "request", "returnType", "failOnError", "modelParameters", "responseFormat")
CANCELLED = "The query was cancelled."
_REQUEST_KEY = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}
_INTERNAL_NAME = re.compile(r"ai_query__(?:udf)?\d+")
_INTERNAL_CALL = re.compile(r"\bai_query__\d+\(")


class SqlError(Exception):
    """A query that cannot run or did not finish, with a message a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class SqlResult:
    """The last statement's rows (at most ``max_rows`` and ``max_bytes``; ``truncated`` when there
    were more, and ``note`` says which limit cut them)."""

    columns: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool
    seconds: float
    ai_rows: int  # rows answered by ai_query
    note: str = ""


@dataclass
class Progress:
    """Rows answered by ai_query so far, of those handed to it so far (DuckDB hands them over in
    batches, so ``total`` grows as a large input is read)."""

    done: int = 0
    total: int = 0


# --- finding the calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a call returns: the endpoint's task, its ``returnType`` and ``failOnError``."""

    task: str
    return_type: str | None
    fail_on_error: bool

    @property
    def base_type(self) -> str:
        if self.return_type:
            return self.return_type
        return "FLOAT[]" if self.task == EMBEDDINGS else "VARCHAR"

    @property
    def sql_type(self) -> str:
        if self.fail_on_error:
            return self.base_type
        return f'STRUCT(result {self.base_type}, "errorMessage" VARCHAR)'


@dataclass(frozen=True)
class Call:
    """One ``ai_query(...)`` in the SQL text: where its name is and its literal arguments."""

    start: int  # offset of the name ``ai_query``
    end: int  # offset just past the name
    endpoint: str
    return_type: str | None
    fail_on_error: bool
    # The endpoint and request arguments written "double-quoted", as Databricks' examples do (Spark
    # SQL reads a string there, DuckDB a column): (offset, end, the same string single-quoted).
    strings: tuple[tuple[int, int, str], ...] = ()
    stop: int = 0  # offset just past the call's closing parenthesis


@dataclass(frozen=True)
class _Token:
    start: int
    text: str
    kind: str  # DuckDB's token type: identifier, keyword, string_const, operator, ...


def _tokens(sql: str) -> list[_Token]:
    try:
        found = duckdb.tokenize(sql)
    except duckdb.Error as exc:
        raise SqlError(_clean(str(exc))) from None
    out = []
    for i, (start, kind) in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(sql)
        out.append(_Token(start, sql[start:end].rstrip(), kind.name))
    return out


def _string_literal(token: _Token) -> str | None:
    if token.kind != "string_const" or not token.text.startswith("'"):
        return None
    return token.text[1:-1].replace("''", "'")


def _double_quoted(token: _Token) -> str | None:
    """Spark SQL's ``"text"`` string literal, which DuckDB reads as a column name."""
    if token.kind != "identifier" or not token.text.startswith('"'):
        return None
    return token.text[1:-1].replace('""', '"')


def _spark_strings(given: dict[str, list[_Token]]) -> tuple[tuple[int, int, str], ...]:
    """The endpoint and request arguments written ``"text"``, each with DuckDB's ``'text'``."""
    out = []
    for value in (given["endpoint"], given["request"]):
        text = _double_quoted(value[0]) if len(value) == 1 else None
        if text is not None:
            out.append((value[0].start, value[0].start + len(value[0].text), "'" + text.replace("'", "''") + "'"))
    return tuple(out)


def _arguments(tokens: list[_Token], opening: int) -> tuple[list[list[_Token]], int]:
    """The top-level arguments of the call whose ``(`` is ``tokens[opening]``, and the index of its ``)``."""
    args: list[list[_Token]] = [[]]
    depth = 0
    for i in range(opening + 1, len(tokens)):
        token = tokens[i]
        if token.kind == "operator" and token.text in ("(", "[", "{"):
            depth += 1
        elif token.kind == "operator" and token.text in (")", "]", "}"):
            if depth == 0:
                return ([] if args == [[]] else args), i
            depth -= 1
        elif token.kind == "operator" and token.text == "," and depth == 0:
            args.append([])
            continue
        args[-1].append(token)
    raise SqlError("ai_query( is missing its closing parenthesis.")


def find_calls(sql: str) -> list[Call]:
    """Every ``ai_query`` call in ``sql`` with its literal arguments checked; SqlError naming the
    first argument that is wrong."""
    tokens = _tokens(sql)
    calls = []
    for i, token in enumerate(tokens):
        if token.kind != "identifier" or token.text.lower() != "ai_query":
            continue
        if i + 1 >= len(tokens) or tokens[i + 1].text != "(":
            continue
        args, closing = _arguments(tokens, i + 1)
        given = _bind(args)
        calls.append(Call(token.start, token.start + len(token.text), _endpoint(given.get("endpoint")),
                          _return_type(given.get("returntype")), _fail_on_error(given.get("failonerror")),
                          _spark_strings(given), tokens[closing].start + 1))
    return calls


def _bind(args: list[list[_Token]]) -> dict[str, list[_Token]]:
    """ai_query's arguments by lower-cased name, positional or named (``=>`` / ``:=``)."""
    names = {name.lower(): name for name in ARGUMENTS}
    given: dict[str, list[_Token]] = {}
    named = False
    for position, arg in enumerate(args):
        if not arg:
            raise SqlError(f"ai_query's argument {position + 1} is empty.")
        if len(arg) >= 2 and arg[0].kind in ("identifier", "keyword") and arg[1].text in ("=>", ":="):
            named = True
            name, value = arg[0].text.lower(), arg[2:]
            if name not in names:
                raise SqlError(f"ai_query has no argument '{arg[0].text}'; it takes {', '.join(ARGUMENTS)}.")
        elif named:
            raise SqlError("ai_query's positional arguments must come before its named ones.")
        else:
            if position >= len(ARGUMENTS):
                raise SqlError(f"ai_query takes at most {len(ARGUMENTS)} arguments: {', '.join(ARGUMENTS)}.")
            name, value = ARGUMENTS[position].lower(), arg
        if name in given:
            raise SqlError(f"ai_query's argument '{names[name]}' is given twice.")
        given[name] = value
    for required in ("endpoint", "request"):
        if required not in given:
            raise SqlError("ai_query needs at least an endpoint and a request: ai_query('my-endpoint', 'Hello').")
    return given


def _endpoint(value: list[_Token]) -> str:
    name = (_string_literal(value[0]) or _double_quoted(value[0])) if len(value) == 1 else None
    if not name:
        raise SqlError("ai_query's first argument must be the endpoint's name as a string literal, "
                       "like ai_query('local-smollm2-chat', review).")
    return name


def _is_null(value: list[_Token] | None) -> bool:
    """Absent, or the literal NULL (a positional placeholder for the default)."""
    return value is None or (len(value) == 1 and value[0].text.lower() == "null")


def _fail_on_error(value: list[_Token] | None) -> bool:
    if _is_null(value):
        return True
    word = value[0].text.lower() if len(value) == 1 else ""
    if word not in ("true", "false"):
        raise SqlError("ai_query's failOnError must be the literal true or false.")
    return word == "true"


def _return_type(value: list[_Token] | None) -> str | None:
    if _is_null(value):
        return None
    text = _string_literal(value[0]) if len(value) == 1 else None
    if not text:
        raise SqlError("ai_query's returnType must be a DuckDB type name as a string literal, like 'INTEGER'.")
    try:
        return str(duckdb.sqltype(text))
    except duckdb.Error:
        raise SqlError(
            f"ai_query's returnType '{text}' is not a DuckDB type; write DuckDB's syntax, like 'DOUBLE[]' or "
            "'STRUCT(label VARCHAR, score DOUBLE)'."
        ) from None


# --- one row's request ----------------------------------------------------------------------


def json_argument(name: str, text: str | None) -> dict[str, Any] | None:
    """A ``modelParameters`` / ``responseFormat`` value (as DuckDB's ``to_json`` wrote it) as an object."""
    if text is None:
        return None
    value = json.loads(text)
    if isinstance(value, str):  # given as a JSON string rather than a struct
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise invalid(f"ai_query's {name} is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise invalid(f"ai_query's {name} must be a struct like {{'key': value}} or a JSON object string.")
    return value


def request_body(task: str, request: str | list[str], params: dict[str, Any] | None,
                 response_format: dict[str, Any] | None) -> dict[str, Any]:
    """The API request body for one row (or, for embeddings, a chunk of rows)."""
    key = _REQUEST_KEY[task]
    body = dict(params or {})
    if key in body:
        raise invalid(f"ai_query's modelParameters cannot set '{key}': the request (2nd argument) is the input.")
    body[key] = [{"role": "user", "content": request}] if task == CHAT else request
    if response_format is not None:
        if task != CHAT:
            raise invalid(f"ai_query's responseFormat needs a chat endpoint; this endpoint serves {task}.")
        body["response_format"] = response_format
    return body


@dataclass
class Outcome:
    """One row's answer (text or vector), or its error."""

    value: Any = None
    error: str | None = None


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- results as text ------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """A result value as text (CSV cells, the page, the command's table); NULL is ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def write_csv(result: SqlResult, out: IO[str]) -> None:
    writer = csv.writer(out)
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([cell_text(v) for v in row])


def write_json(result: SqlResult, out: IO[str]) -> None:
    """The rows as a JSON array of objects keyed by column name."""
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    json.dump(rows, out, ensure_ascii=False, default=_json_default, indent=1)
    out.write("\n")


# --- the engine -----------------------------------------------------------------------------


def default_concurrency() -> int:
    return int(getattr(settings, "SQL_CONCURRENCY", DEFAULT_CONCURRENCY))


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def stopped_after(seconds: float) -> str:
    return (f"The query was stopped after {seconds:g} s, the time limit for a query (FONDASI_SQL_TIMEOUT). "
            "Narrow it down (fewer rows, a LIMIT, no cross join), or run it with `python manage.py sql`.")


class Engine:
    """Runs one SQL text for ``user`` (recorded in the log) with ``ai_query`` available.

    :meth:`run` blocks its thread; :meth:`cancel` and :attr:`progress` are for other threads.
    """

    def __init__(self, user: str, *, concurrency: int | None = None, external_access: bool = True,
                 max_rows: int | None = None, max_bytes: int | None = None, timeout: float | None = None,
                 memory_limit: str | None = None) -> None:
        """``timeout`` 0 means no time limit; None (like the other limits) means the setting's."""
        self.user = user
        self.concurrency = concurrency if concurrency is not None else default_concurrency()
        if self.concurrency < 1:
            raise SqlError(f"The concurrency must be at least 1; got {self.concurrency}.")
        self.external_access = external_access
        self.max_rows = max_rows if max_rows is not None else int(getattr(settings, "SQL_MAX_ROWS", DEFAULT_MAX_ROWS))
        self.max_bytes = max_bytes if max_bytes is not None else int(
            getattr(settings, "SQL_MAX_RESULT_BYTES", DEFAULT_MAX_RESULT_BYTES))
        self.timeout = timeout if timeout is not None else float(
            getattr(settings, "SQL_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
        self.memory_limit = memory_limit or str(getattr(settings, "SQL_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT))
        self.progress = Progress()
        # Set when the query must stop: cancelled by a person, or past its time limit (the message says which).
        self._stopped = threading.Event()
        self._stop_message = CANCELLED
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._futures: set[concurrent.futures.Future] = set()
        self._failure: SqlError | None = None
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._fondasi_missing: str | None = None

    @property
    def cancelled(self) -> bool:
        """Cancelled by :meth:`cancel` (a query stopped by its time limit failed instead)."""
        return self._stopped.is_set() and self._stop_message == CANCELLED

    def cancel(self) -> None:
        """Stop the query: interrupt DuckDB and cancel the ai_query requests in flight."""
        self._stop(CANCELLED)

    def _stop(self, message: str) -> None:
        if not self._stopped.is_set():
            self._stop_message = message
            self._stopped.set()
        self._interrupt()
        for future in list(self._futures):
            future.cancel()

    def _interrupt(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.interrupt()
            except duckdb.Error:  # closed in between: the query has ended anyway
                pass

    def _watch(self, done: threading.Event) -> None:
        """Stop the query once it has run ``timeout`` seconds."""
        if done.wait(self.timeout):
            return
        self._stop(stopped_after(self.timeout))
        # An interrupt that fell between two statements is lost: repeat it until the run ends.
        while not done.wait(0.2):
            self._interrupt()

    def run(self, sql: str) -> SqlResult:
        """Run every statement of ``sql``; the last one's rows. SqlError with a clear message otherwise."""
        started = time.perf_counter()
        done = threading.Event()
        if self.timeout > 0:
            threading.Thread(target=self._watch, args=(done,), name="sql-time-limit", daemon=True).start()
        try:
            result = self._run(sql, started)
        except SqlError as exc:
            log.info("sql user=%s ai_rows=%d ms=%.1f error=%s", self.user, self.progress.done,
                     (time.perf_counter() - started) * 1000, _shorten(exc.message, 200))
            raise
        finally:
            done.set()
        log.info("sql user=%s rows=%d ai_rows=%d ms=%.1f", self.user, len(result.rows), result.ai_rows,
                 result.seconds * 1000)
        return result

    def _run(self, sql: str, started: float) -> SqlResult:
        calls = find_calls(sql)
        tasks = {name: self._wait(self._task_of(name)) for name in {call.endpoint for call in calls}}
        conn = self._conn = self._connect()
        try:
            text, written = self._register(conn, sql, calls, tasks)
            statements = conn.extract_statements(text)
            if not statements:
                raise SqlError("The query is empty: write a statement such as SELECT ai_query('local-smollm2-chat', 'Hello').")
            for statement in statements[:-1]:
                self._check_cancelled()
                conn.execute(statement)
            self._check_cancelled()
            relation = conn.sql(statements[-1].query)
            table, note = self._fetch(relation)
            columns = headers([str(c) for c in relation.columns], written)
            types = [str(t) for t in relation.types]
        except duckdb.Error as exc:
            raise self._error(exc) from None
        finally:
            self._conn = None
            conn.close()
        self._check_cancelled()
        rows = list(zip(*(column.to_pylist() for column in table.columns))) if table.num_columns else []
        return SqlResult(columns, types, rows, bool(note), time.perf_counter() - started, self.progress.done, note)

    def _fetch(self, relation: duckdb.DuckDBPyRelation) -> tuple[pa.Table, str]:
        """The relation's rows up to ``max_rows`` and ``max_bytes``, fetched in batches; and a note
        naming the limit that cut them ('' when every row was kept). DuckDB computes no further."""
        reader = relation.limit(self.max_rows + 1).to_arrow_reader(FETCH_ROWS)
        kept: list[pa.RecordBatch] = []
        rows = size = 0
        note = ""
        try:
            for batch in reader:
                self._check_cancelled()
                if rows + batch.num_rows > self.max_rows:
                    batch = batch.slice(0, self.max_rows - rows)
                    note = (f"Only the first {self.max_rows:,} rows are kept: the limit is SQL_MAX_ROWS "
                            "(FONDASI_SQL_MAX_ROWS).")
                if size + batch.nbytes > self.max_bytes:
                    batch = _fitting(batch, self.max_bytes - size)
                    note = (f"Only the first {rows + batch.num_rows:,} rows are kept: the result is larger than "
                            f"{_mib(self.max_bytes)}, the limit (FONDASI_SQL_MAX_RESULT_BYTES).")
                kept.append(batch)
                rows += batch.num_rows
                size += batch.nbytes
                if note:
                    break
        finally:
            reader.close()
        return pa.Table.from_batches(kept, schema=reader.schema), note

    def _check_cancelled(self) -> None:
        if self._stopped.is_set():
            raise SqlError(self._stop_message)

    def _error(self, exc: duckdb.Error) -> SqlError:
        if self._stopped.is_set():
            return SqlError(self._stop_message)
        if self._failure is not None:
            return self._failure
        message = _clean(str(exc))
        if isinstance(exc, duckdb.PermissionException):
            message += " (Reading or writing files needs a superuser on the SQL page.)"
        elif isinstance(exc, duckdb.OutOfMemoryException):
            # DuckDB's advice that follows (SET memory_limit…) cannot be followed here: the settings are locked.
            message = message.split("\n")[0].strip()
            message += (f" (DuckDB may use at most {self.memory_limit} for a query, the limit FONDASI_SQL_MEMORY_LIMIT: "
                        "narrow the query down.)")
        elif self._fondasi_missing and re.search(r"\bfondasi\b", message):
            message += f" (Fondasi's database is not attached as 'fondasi': {self._fondasi_missing}.)"
        return SqlError(message)

    # --- set-up ---------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        # Nothing is downloaded at run time: extensions load only when already installed.
        conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
        if self.external_access:
            self._fondasi_missing = _attach_fondasi(conn)
        else:
            self._fondasi_missing = "only superusers can query it"
            conn.execute("SET enable_external_access = false")
        try:
            conn.execute(f"SET memory_limit = '{self.memory_limit.replace(chr(39), '')}'")
        except duckdb.Error as exc:
            conn.close()
            raise SqlError(f"FONDASI_SQL_MEMORY_LIMIT is not a DuckDB memory size like '1GB': {_clean(str(exc))}") from None
        # No Python variable becomes a table (DuckDB's replacement scans), and no SET undoes the above.
        conn.execute("SET python_enable_replacements = false")
        conn.execute("SET lock_configuration = true")
        return conn

    def _register(self, conn: duckdb.DuckDBPyConnection, sql: str, calls: list[Call],
                  tasks: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
        """Create one macro (and its UDF) per kind of call; ``sql`` with each call renamed to its
        macro, and each renamed call's text with the text the user wrote (for :func:`headers`)."""
        names: dict[Kind, str] = {}
        pieces, last = [], 0
        written = []
        for call in calls:
            kind = Kind(tasks[call.endpoint], call.return_type, call.fail_on_error)
            if kind not in names:
                names[kind] = f"ai_query__{len(names) + 1}"
                self._create(conn, names[kind], kind)
            pieces += [sql[last:call.start], names[kind]]
            renamed, at = [names[kind]], call.end
            last = call.end
            for start, end, literal in call.strings:
                pieces += [sql[last:start], literal]
                renamed += [sql[at:start], literal]
                last = at = end
            renamed.append(sql[at:call.stop])
            written.append(("".join(renamed), " ".join(sql[call.start:call.stop].split())))
        return "".join(pieces) + sql[last:], written

    def _create(self, conn: duckdb.DuckDBPyConnection, name: str, kind: Kind) -> None:
        udf = name.replace("__", "__udf")
        text = duckdb.sqltype("VARCHAR")
        conn.create_function(
            udf, self._udf(kind), [text, text, text, text], duckdb.sqltype(kind.sql_type),
            type="arrow", null_handling="special", side_effects=True,
        )
        # The macro takes the optional arguments by name; returnType and failOnError were read
        # from the text already (they decide the macro), the others reach the UDF as JSON.
        conn.execute(f"""
            CREATE MACRO {name}(endpoint, request, returnType := NULL, failOnError := true,
                                modelParameters := NULL, responseFormat := NULL) AS
            {udf}(endpoint,
                  CASE WHEN typeof(request) IN ('VARCHAR', '"NULL"') THEN request::VARCHAR
                       ELSE error('ai_query''s request (2nd argument) must be text (VARCHAR), not ' || typeof(request)
                                  || ': cast it, like CAST(x AS VARCHAR).') END,
                  to_json(modelParameters)::VARCHAR, to_json(responseFormat)::VARCHAR)
        """)

    async def _task_of(self, name: str) -> str:
        try:
            return (await registry.get(name)).task
        except ServingError as exc:
            raise SqlError(f"ai_query: {exc.message}") from None

    def _wait(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the SQL event loop and wait for it here (a cancel ends the wait)."""
        self._check_cancelled()
        future = asyncio.run_coroutine_threadsafe(coro, requests_loop())
        self._futures.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise SqlError(self._stop_message) from None
        finally:
            self._futures.discard(future)

    # --- the UDF --------------------------------------------------------------------------

    def _udf(self, kind: Kind) -> Callable[..., pa.Array]:
        def ai_query(endpoints: pa.ChunkedArray, requests: pa.ChunkedArray, params: pa.ChunkedArray,
                     formats: pa.ChunkedArray) -> pa.Array:
            # Runs in a DuckDB thread: the rows go to the SQL event loop and this thread waits.
            try:
                outcomes = self._wait(self._batch(kind, endpoints[0].as_py(), requests.to_pylist(),
                                                  params.to_pylist(), formats.to_pylist()))
                return _to_arrow(kind, outcomes)
            except SqlError as exc:
                self._failure = self._failure or exc
                raise

        return ai_query

    async def _batch(self, kind: Kind, endpoint: str, requests: list[str | None], params: list[str | None],
                     formats: list[str | None]) -> list[Outcome | None]:
        """One outcome per row, in row order (None for a NULL request)."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        rows = [i for i, request in enumerate(requests) if request is not None]
        self.progress.total += len(rows)
        try:
            async with asyncio.TaskGroup() as group:
                if kind.task == EMBEDDINGS:
                    for chunk in _chunks(rows, params, formats):
                        group.create_task(self._embed_rows(kind, endpoint, chunk, requests, params[chunk[0]],
                                                           formats[chunk[0]], outcomes))
                else:
                    for i in rows:
                        group.create_task(self._text_row(kind, endpoint, i, requests, params, formats, outcomes))
        except* SqlError as failed:
            raise failed.exceptions[0] from None
        return outcomes

    async def _text_row(self, kind: Kind, endpoint: str, i: int, requests: list, params: list, formats: list,
                        outcomes: list) -> None:
        try:
            body = request_body(kind.task, requests[i], json_argument("modelParameters", params[i]),
                                json_argument("responseFormat", formats[i]))
            outcomes[i] = Outcome(await self._answer(endpoint, body))
        except ServingError as exc:
            outcomes[i] = self._row_failed(kind, endpoint, requests[i], exc)
        self.progress.done += 1

    async def _embed_rows(self, kind: Kind, endpoint: str, chunk: list[int], requests: list, params: str | None,
                          response_format: str | None, outcomes: list) -> None:
        try:
            body = request_body(kind.task, [requests[i] for i in chunk], json_argument("modelParameters", params),
                                json_argument("responseFormat", response_format))
            vectors = await self._answer(endpoint, body)
            for i, vector in zip(chunk, vectors):
                outcomes[i] = Outcome(vector)
            self.progress.done += len(chunk)
        except ServingError as exc:
            if len(chunk) > 1 and not exc.retryable:
                # One bad text must not fail its neighbours: find it row by row.
                for i in chunk:
                    await self._embed_rows(kind, endpoint, [i], requests, params, response_format, outcomes)
                return
            for i in chunk:
                outcomes[i] = self._row_failed(kind, endpoint, requests[i], exc)
            self.progress.done += len(chunk)

    def _row_failed(self, kind: Kind, endpoint: str, request: str, exc: ServingError) -> Outcome:
        if kind.fail_on_error:
            # A passing failure (rate limit, vendor down) may spare the other rows: say how to keep them.
            hint = " Add failOnError => false to keep going with the error in each failed row." if exc.retryable else ""
            raise SqlError(f"ai_query('{endpoint}', '{_shorten(request)}') failed: {exc.message}{hint}")
        return Outcome(error=exc.message)

    async def _answer(self, endpoint: str, body: dict[str, Any]) -> Any:
        """The answer to ``body``: text, or the vectors of an embeddings body. A 429 is retried
        after its Retry-After, at most ``concurrency`` requests per endpoint at a time."""
        limit = self._limits.setdefault(endpoint, asyncio.Semaphore(self.concurrency))
        async with limit:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    query = await service.prepare(endpoint, body)
                    if query.task == EMBEDDINGS:
                        return (await query.embed()).vectors
                    result = await query.result()
                    return result.choices[0].text if result.choices else ""
                except ServingError as exc:
                    if exc.status != 429 or attempt == MAX_ATTEMPTS:
                        raise
                    wait = exc.retry_after or 1
                    log.info("ai_query('%s') got 429 %s; try %d of %d in %d s.", endpoint, exc.code, attempt + 1,
                             MAX_ATTEMPTS, wait)
                    await asyncio.sleep(wait)
                except Exception:  # noqa: BLE001 - a row shows a reference, never a traceback
                    ref = uuid.uuid4().hex[:12]
                    log.exception("Internal error %s in ai_query('%s')", ref, endpoint)
                    raise ServingError(f"Internal error (reference {ref}); the server log has the details.",
                                       "INTERNAL_ERROR") from None
        raise AssertionError("unreachable")


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def requests_loop() -> asyncio.AbstractEventLoop:
    """The event loop every engine of this process sends its rows on, started on first use.

    One loop for the life of the process, so its pooled HTTP client (``providers.http``) keeps
    its connections from one query to the next: opening 32 connections afresh costs a batch at
    concurrency 32 about a tenth of its time.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="sql-ai-query", daemon=True).start()
        return _loop


def _chunks(rows: list[int], params: list[str | None], formats: list[str | None]) -> Iterator[list[int]]:
    """Consecutive rows with the same optional arguments, at most EMBED_CHUNK at a time."""
    chunk: list[int] = []
    for i in rows:
        if chunk and (len(chunk) == EMBED_CHUNK or (params[i], formats[i]) != (params[chunk[0]], formats[chunk[0]])):
            yield chunk
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk


def _to_arrow(kind: Kind, outcomes: list[Outcome | None]) -> pa.Array:
    """The UDF's answer for a batch, typed as ``kind.sql_type``."""
    base_type = pa.list_(pa.float32()) if kind.task == EMBEDDINGS else pa.string()
    values = pa.array([o.value if o else None for o in outcomes], type=base_type)
    errors = [o.error if o else None for o in outcomes]
    if kind.return_type:
        values, bad = convert(values, kind.return_type)
        for i in bad:
            if errors[i] is None:
                errors[i] = f"The answer is not a valid {kind.return_type}: '{_shorten(outcomes[i].value)}'."
                if kind.fail_on_error:
                    raise SqlError(f"ai_query's returnType: {errors[i]} Change returnType, or ask for that shape "
                                   "(responseFormat), or add failOnError => false.")
    if kind.fail_on_error:
        return values
    mask = pa.array([o is None for o in outcomes])
    return pa.StructArray.from_arrays([values, pa.array(errors, pa.string())], names=["result", "errorMessage"], mask=mask)


def convert(values: pa.Array, sql_type: str) -> tuple[pa.Array, list[int]]:
    """``values`` cast to ``sql_type`` by DuckDB's own casts (text through JSON for nested
    types), and the positions that did not convert."""
    nested = duckdb.sqltype(sql_type).id in ("struct", "list", "array", "map", "union")
    if pa.types.is_string(values.type):
        expr = f"TRY_CAST(TRY_CAST(x AS JSON) AS {sql_type})" if nested else f"TRY_CAST(trim(x) AS {sql_type})"
    else:
        expr = f"TRY_CAST(x AS {sql_type})"
    with duckdb.connect() as conn:
        out = conn.from_arrow(pa.table({"x": values})).project(f"{expr} AS v").to_arrow_table().column("v")
    converted = out.combine_chunks() if out.num_chunks else pa.nulls(0, out.type)
    bad = [i for i, (a, b) in enumerate(zip(values.is_null().to_pylist(), converted.is_null().to_pylist())) if not a and b]
    return converted, bad


def headers(columns: list[str], written: list[tuple[str, str]]) -> list[str]:
    """Column names as the user wrote them: DuckDB names an unaliased column after its expression,
    which holds our internal ``ai_query__1(…)`` call (and DuckDB's rewriting of its arguments);
    each such call goes back to the text the user wrote, ``ai_query('local-smollm2-chat', q)``.
    ``written`` pairs each renamed call's text with the user's (see ``Engine._register``)."""
    if not any(_INTERNAL_CALL.search(c) for c in columns):
        return columns
    # DuckDB's name for an expression is the expression printed back from its parse tree; the same
    # printing of each renamed call finds it in the names.
    shown = sorted(((_printed(renamed), mine) for renamed, mine in written), key=lambda p: -len(p[0] or ""))
    out = []
    for column in columns:
        if _INTERNAL_CALL.search(column):
            for printed, mine in shown:
                if printed:
                    column = column.replace(printed, mine)
            column = _INTERNAL_CALL.sub("ai_query(", column)
        out.append(column)
    return out


def _printed(expression: str) -> str | None:
    """``expression`` as DuckDB prints it back from its parse tree (as it names a column); None
    when it does not parse on its own."""
    with duckdb.connect() as conn:
        try:
            text = conn.execute("SELECT json_deserialize_sql(json_serialize_sql(?))", ["SELECT " + expression]).fetchone()[0]
        except duckdb.Error:
            return None
    return text.removeprefix("SELECT ") if isinstance(text, str) else None


def _fitting(batch: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The longest head of ``batch`` whose Arrow size is at most ``budget`` bytes."""
    low, high = 0, batch.num_rows  # the head of `low` rows fits; of `high + 1` rows does not
    while low < high:
        middle = (low + high + 1) // 2
        if batch.slice(0, middle).nbytes <= budget:
            low = middle
        else:
            high = middle - 1
    return batch.slice(0, low)


def _attach_fondasi(conn: duckdb.DuckDBPyConnection) -> str | None:
    """Attach Fondasi's SQLite database read-only as ``fondasi``; why not, when it cannot be."""
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3"):
        return "it is not an SQLite database"
    path = Path(str(database["NAME"]))
    if not path.is_file():
        return "it is not a file on disk"
    try:
        conn.execute("LOAD sqlite")
    except duckdb.Error:
        return ("DuckDB's sqlite extension is not installed (DuckDB's wheel does not bundle it and nothing is "
                "downloaded at run time; run INSTALL sqlite once where there is network access)")
    quoted = str(path).replace("'", "''")
    try:
        conn.execute(f"ATTACH '{quoted}' AS fondasi (TYPE sqlite, READ_ONLY)")
    except duckdb.Error as exc:
        return f"attaching it failed: {_clean(str(exc))}"
    return None


def _clean(message: str) -> str:
    """A DuckDB error as a person should read it: our internal names back to ``ai_query``."""
    message = _INTERNAL_NAME.sub("ai_query", message)
    message = message.replace("Python exception occurred while executing the UDF: ", "")
    return message.strip()
