"""SQL ai_query on embedded DuckDB (endpoints/sql.py) and `python manage.py sql`.

Real DuckDB, the real local models with tiny max_tokens, and an OpenAI-compatible vendor on
127.0.0.1 (tests/fakes/openai_upstream.py) for concurrency, order, failures and cancelling.
"""
from __future__ import annotations

import io
import json
import logging
import math
import threading
import time

import duckdb
import pytest
from django.core.management import CommandError, call_command

from endpoints.config import apply, load_file, parse_text
from endpoints.sql import CANCELLED, EMBED_CHUNK, Engine, SqlError, find_calls, write_csv
from tests.conftest import ROOT
from tests.fakes.openai_upstream import openai_upstream  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

CHAT, COMPLETIONS, EMBEDDINGS = "local-smollm2-chat", "local-smollm2-completions", "local-minilm-embeddings"
FAKE = """
endpoints:
  - name: fake-chat
    task: llm/v1/chat
    served_entities:
      - name: fake-chat-model
        external_model: {{name: gpt-fake, provider: openai-compatible, openai_config: {{openai_api_base: "{base}"}}}}
  - name: fake-embeddings
    task: llm/v1/embeddings
    served_entities:
      - name: fake-embedding-model
        external_model: {{name: embed-fake, provider: openai-compatible, openai_config: {{openai_api_base: "{base}"}}}}
"""


@pytest.fixture
def fake(openai_upstream, db):  # noqa: F811
    """The shipped endpoints plus ``fake-chat`` and ``fake-embeddings``, served by the fake vendor."""
    apply(load_file(ROOT / "endpoints.yaml") + parse_text(FAKE.format(base=openai_upstream.base_url)))
    return openai_upstream


def run(sql: str, **options):
    return Engine("alice", **options).run(sql)


def error_of(sql: str, **options) -> str:
    with pytest.raises(SqlError) as caught:
        run(sql, **options)
    message = caught.value.message
    assert "Traceback" not in message and "ai_query__" not in message
    return message


def column(result, index: int = 0) -> list:
    return [row[index] for row in result.rows]


def sent_prompts(fake) -> list[str]:
    return [r.json["messages"][0]["content"] for r in fake.requests]


# --- the local models -------------------------------------------------------------------------


def test_it_answers_a_chat_endpoint_with_text(default_endpoints):
    result = run(f"SELECT ai_query('{CHAT}', 'Can you explain AI in ten words?', "
                 "modelParameters => {'max_tokens': 8, 'temperature': 0}) AS answer")
    assert result.columns == ["answer"] and result.types == ["VARCHAR"]
    [answer] = column(result)
    assert isinstance(answer, str) and answer.strip()
    assert result.ai_rows == 1


def test_it_answers_a_completions_endpoint_with_text(default_endpoints):
    result = run(f"SELECT ai_query('{COMPLETIONS}', 'The three primary colours are', modelParameters => '{{\"max_tokens\": 4}}')")
    assert result.types == ["VARCHAR"] and column(result)[0].strip()


def test_it_answers_an_embeddings_endpoint_with_a_float_list(default_endpoints):
    result = run(f"SELECT text, ai_query('{EMBEDDINGS}', text) AS v FROM (VALUES ('a cat sat on the mat'), ('stock markets fell')) t(text)")
    assert result.types == ["VARCHAR", "FLOAT[]"]
    cat, stocks = column(result, 1)
    assert len(cat) == len(stocks) == 384
    assert abs(math.sqrt(sum(x * x for x in cat)) - 1) < 1e-3
    assert cat != stocks


def test_response_format_makes_the_local_model_answer_json(default_endpoints):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
              "additionalProperties": False}
    response_format = json.dumps({"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}})
    result = run(f"SELECT ai_query('{CHAT}', 'Is the sky blue?', responseFormat => '{response_format}', "
                 "modelParameters => {'max_tokens': 24, 'temperature': 0}) AS text, "
                 f"ai_query('{CHAT}', 'Is the sky blue?', responseFormat => '{response_format}', "
                 "modelParameters => {'max_tokens': 24, 'temperature': 0}, returnType => 'STRUCT(answer VARCHAR)') AS parsed")
    [(text, parsed)] = result.rows
    assert json.loads(text)["answer"] in ("yes", "no")
    assert result.types[1] == "STRUCT(answer VARCHAR)" and parsed["answer"] in ("yes", "no")


def test_the_local_models_full_queue_is_waited_out_not_failed(default_endpoints, caplog):
    # More rows at once than the model's queue holds: the overflow is answered 429 with a
    # Retry-After, and those rows are sent again rather than failed.
    caplog.set_level(logging.INFO, logger="fondasi.sql")
    result = run(f"SELECT i, ai_query('{CHAT}', 'Say ' || i, modelParameters => {{'max_tokens': 1}}) "
                 "FROM range(14) t(i) ORDER BY i", concurrency=14)
    assert column(result) == list(range(14))
    assert all(isinstance(answer, str) for answer in column(result, 1))
    assert any("got 429 REQUEST_LIMIT_EXCEEDED" in r.getMessage() for r in caplog.records)


# --- batches ----------------------------------------------------------------------------------


def test_a_batch_keeps_row_order_across_concurrent_requests(fake):
    fake.delay = 0.05
    texts = ["x" * (1 + i % 37) + str(i) for i in range(2 * EMBED_CHUNK + 20)]
    values = ", ".join(f"({i}, '{t}')" for i, t in enumerate(texts))
    result = run(f"SELECT id, ai_query('fake-embeddings', text) FROM (VALUES {values}) t(id, text)")
    assert column(result) == list(range(len(texts)))
    # The fake's vector is [position in its request, length of the text, 0.5].
    assert [vector[1] for vector in column(result, 1)] == [len(t) for t in texts]
    assert len(fake.requests) == 3  # EMBED_CHUNK rows a request


def test_a_batch_sends_rows_concurrently_up_to_the_limit(fake):
    fake.delay = 0.5
    started = time.monotonic()
    result = run("SELECT id, ai_query('fake-chat', 'Summarise: ' || review) FROM "
                 "(SELECT i AS id, 'review ' || i AS review FROM range(8) t(i)) ORDER BY id", concurrency=4)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.9, elapsed  # two waves of four, not eight at once nor one by one
    assert column(result, 1) == ["Hello, world!"] * 8
    assert sorted(sent_prompts(fake)) == sorted(f"Summarise: review {i}" for i in range(8))


def test_a_batch_reads_a_csv_file_in_row_order(fake, tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("id,review\n" + "".join(f"{i},Review number {i}\n" for i in range(12)))
    fake.delay = 0.05
    result = run(f"SELECT id, ai_query('fake-chat', 'Summarise: ' || review) AS summary FROM '{reviews}'")
    assert column(result) == list(range(12)) and result.ai_rows == 12
    assert sorted(sent_prompts(fake)) == sorted(f"Summarise: Review number {i}" for i in range(12))


def test_progress_counts_rows_done_of_rows_handed_over(fake):
    fake.delay = 0.3
    engine = Engine("alice", concurrency=2)
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append((engine.progress.done, engine.progress.total))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        engine.run("SELECT ai_query('fake-chat', 'row ' || i) FROM range(6) t(i)")
    finally:
        done.set()
        watcher.join()
    assert any(total == 6 and 0 < finished < 6 for finished, total in seen)
    assert (engine.progress.done, engine.progress.total) == (6, 6)


def test_cancel_stops_the_query_and_the_requests_in_flight(fake):
    fake.delay = 10
    engine = Engine("alice")
    threading.Timer(0.5, engine.cancel).start()
    started = time.monotonic()
    with pytest.raises(SqlError) as caught:
        engine.run("SELECT ai_query('fake-chat', 'row ' || i) FROM range(4) t(i)")
    assert caught.value.message == CANCELLED
    assert time.monotonic() - started < 3
    assert fake.wait_for_disconnect(2)  # the vendor saw the request go away


def test_a_429_is_retried_after_its_retry_after(fake, settings):
    settings.FONDASI_HTTP_RETRIES = 0  # the HTTP layer's own retries off: this is the engine's
    fake.fail(429, "slow down", headers={"Retry-After": "1"})

    def recover():
        while not fake.requests:
            time.sleep(0.01)
        fake.error = None

    threading.Thread(target=recover).start()
    started = time.monotonic()
    assert column(run("SELECT ai_query('fake-chat', 'hello')")) == ["Hello, world!"]
    assert len(fake.requests) == 2 and time.monotonic() - started >= 0.9


def test_a_null_request_is_a_null_answer_and_is_not_sent(fake):
    result = run("SELECT ai_query('fake-chat', x), ai_query('fake-chat', x, failOnError => false) "
                 "FROM (VALUES ('a'), (NULL)) t(x)")
    assert column(result) == ["Hello, world!", None]
    assert column(result, 1) == [{"result": "Hello, world!", "errorMessage": None}, None]
    assert len(fake.requests) == 2


def test_several_statements_run_and_the_last_ones_rows_come_back(fake):
    result = run("CREATE TABLE reviews AS SELECT * FROM (VALUES (2, 'meh'), (1, 'great')) t(id, review);"
                 "SELECT id, ai_query('fake-chat', review) AS answer FROM reviews ORDER BY id;")
    assert result.rows == [(1, "Hello, world!"), (2, "Hello, world!")]


def test_ai_query_in_a_string_or_as_a_column_name_is_left_alone(fake):
    assert run("SELECT 'ai_query(''x'', ''y'')' AS s").rows == [("ai_query('x', 'y')",)]
    assert run("SELECT ai_query FROM (SELECT 1 AS ai_query)").rows == [(1,)]
    assert not fake.requests


def test_rows_past_max_rows_are_left_out_and_said_so(db):
    result = run("SELECT * FROM range(10)", max_rows=3)
    assert column(result) == [0, 1, 2] and result.truncated
    assert result.note == "Only the first 3 rows are kept: the limit is SQL_MAX_ROWS (FONDASI_SQL_MAX_ROWS)."


# --- limits: one query cannot take the server down ----------------------------------------------


def test_a_result_larger_than_its_byte_limit_keeps_its_first_rows_and_says_so(db, settings):
    settings.SQL_MAX_RESULT_BYTES = 1024 * 1024
    result = run("SELECT i, repeat('x', 20000) AS s FROM range(10000) t(i)")
    kept = len(result.rows)
    assert 30 < kept < 60 and result.truncated and column(result) == list(range(kept))
    assert result.note == (f"Only the first {kept} rows are kept: the result is larger than 1 MiB, "
                           "the limit (FONDASI_SQL_MAX_RESULT_BYTES).")


def test_a_query_past_its_time_limit_is_stopped_saying_after_how_long(db, settings):
    settings.SQL_TIMEOUT_SECONDS = 1
    started = time.monotonic()
    message = error_of("SELECT count(*) FROM range(100000000) a, range(100000000) b")
    assert time.monotonic() - started < 5
    assert message.startswith("The query was stopped after 1 s, the time limit for a query (FONDASI_SQL_TIMEOUT).")


def test_the_time_limit_stops_ai_query_requests_in_flight_too(fake, settings):
    settings.SQL_TIMEOUT_SECONDS = 0.5
    fake.delay = 10
    started = time.monotonic()
    message = error_of("SELECT ai_query('fake-chat', 'row ' || i) FROM range(4) t(i)")
    assert message.startswith("The query was stopped after 0.5 s") and time.monotonic() - started < 3
    assert fake.wait_for_disconnect(2)


def test_duckdb_works_within_its_memory_limit(db, settings):
    settings.SQL_MEMORY_LIMIT = "20MB"
    message = error_of("SELECT count(DISTINCT repeat('x', 1000) || range) FROM range(300000)")
    assert message.startswith("Out of Memory Error") and "SET memory_limit" not in message
    assert message.endswith("(DuckDB may use at most 20MB for a query, the limit FONDASI_SQL_MEMORY_LIMIT: "
                            "narrow the query down.)")


# --- optional arguments -----------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    "modelParameters => {'max_tokens': 5, 'temperature': 0.5, 'stop': ['END']}",
    "modelParameters := '{\"max_tokens\": 5, \"temperature\": 0.5, \"stop\": [\"END\"]}'",
    "NULL, true, {'max_tokens': 5, 'temperature': 0.5, 'stop': ['END']}",  # positional
])
def test_model_parameters_reach_the_model(fake, params):
    run(f"SELECT ai_query('fake-chat', 'hello', {params})")
    sent = fake.last_request.json
    assert sent["max_tokens"] == 5 and sent["temperature"] == 0.5 and sent["stop"] == ["END"]


@pytest.mark.parametrize("fmt", ["'{\"type\": \"json_object\"}'", "{'type': 'json_object'}"])
def test_response_format_reaches_the_model(fake, fmt):
    run(f"SELECT ai_query('fake-chat', 'hello', responseFormat => {fmt})")
    assert fake.last_request.json["response_format"] == {"type": "json_object"}


def test_fail_on_error_false_gives_each_row_null_and_its_error(fake):
    fake.fail(400, "The model gpt-fake does not exist.")
    result = run("SELECT i, ai_query('fake-chat', 'row ' || i, failOnError => false) AS r FROM range(3) t(i)")
    assert result.types == ["BIGINT", "STRUCT(result VARCHAR, errorMessage VARCHAR)"]
    assert len(result.rows) == 3 and len(fake.requests) == 3
    for _, value in result.rows:
        assert value["result"] is None and "gpt-fake does not exist" in value["errorMessage"]


def test_fail_on_error_false_answers_with_a_null_error(fake):
    result = run("SELECT ai_query('fake-chat', 'hello', failOnError => false) AS r")
    assert column(result) == [{"result": "Hello, world!", "errorMessage": None}]


def test_databricks_positional_return_type_and_fail_on_error_work(fake):
    result = run("SELECT ai_query('fake-chat', 'hello', 'VARCHAR', false) AS r")
    assert column(result) == [{"result": "Hello, world!", "errorMessage": None}]


def test_a_failed_row_ends_the_query_by_default_naming_the_problem(fake):
    fake.fail(400, "The model gpt-fake does not exist.")
    message = error_of("SELECT ai_query('fake-chat', 'Summarise: ' || i) FROM range(3) t(i)")
    assert message.startswith("ai_query('fake-chat', 'Summarise: ")
    assert "gpt-fake does not exist" in message


def test_a_passing_failure_says_how_to_keep_going(fake, settings):
    settings.FONDASI_HTTP_RETRIES = 0
    fake.fail(503, "overloaded")
    message = error_of("SELECT ai_query('fake-chat', 'hello')")
    assert "failOnError => false" in message


@pytest.mark.parametrize(("pieces", "return_type", "expected"), [
    (["4", "2"], "INTEGER", 42),
    (['{"label": "good", ', '"score": 0.5}'], "STRUCT(label VARCHAR, score DOUBLE)", {"label": "good", "score": 0.5}),
    (["[1, 2, 3]"], "INTEGER[]", [1, 2, 3]),
])
def test_return_type_converts_the_answer(fake, pieces, return_type, expected):
    fake.pieces = pieces
    result = run(f"SELECT ai_query('fake-chat', 'hello', returnType => '{return_type}') AS v")
    assert column(result) == [expected] and result.types == [str(duckdb.sqltype(return_type))]


def test_an_embedding_can_be_returned_as_doubles(fake):
    result = run("SELECT ai_query('fake-embeddings', 'abc', returnType => 'DOUBLE[]') AS v")
    assert result.types == ["DOUBLE[]"] and column(result) == [[0.0, 3.0, 0.5]]


def test_an_answer_that_is_not_the_return_type_is_a_row_error_or_the_querys(fake):
    fake.pieces = ["many"]
    result = run("SELECT ai_query('fake-chat', 'hello', returnType => 'INTEGER', failOnError => false) AS v")
    assert column(result) == [{"result": None, "errorMessage": "The answer is not a valid INTEGER: 'many'."}]
    assert "not a valid INTEGER: 'many'" in error_of("SELECT ai_query('fake-chat', 'hello', returnType => 'INTEGER')")


# --- errors a person can act on ---------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELEC 1", 'syntax error at or near "SELEC"'),
    ("", "The query is empty"),
    ("SELECT ai_query('no-such-endpoint', 'hi')", "Endpoint 'no-such-endpoint' does not exist"),
    ("SELECT ai_query('fake-chat', 42)", "request (2nd argument) must be text (VARCHAR), not INTEGER"),
    ("SELECT ai_query(name, 'hi') FROM (SELECT 'fake-chat' AS name)", "first argument must be the endpoint's name as a string literal"),
    ("SELECT ai_query('fake-chat')", "needs at least an endpoint and a request"),
    ("SELECT ai_query('fake-chat', 'hi', temprature => 1)", "ai_query has no argument 'temprature'"),
    ("SELECT ai_query('fake-chat', 'hi', failOnError => 'no')", "failOnError must be the literal true or false"),
    ("SELECT ai_query('fake-chat', 'hi', returnType => 'ARRAY<FLOAT>')", "returnType 'ARRAY<FLOAT>' is not a DuckDB type"),
    ("SELECT ai_query('fake-chat', 'hi', failOnError => false, 'VARCHAR')", "positional arguments must come before"),
    ("SELECT ai_query('fake-chat', 'hi', NULL, true, NULL, NULL, 7)", "at most 6 arguments"),
    ("SELECT ai_query('fake-chat', 'hi', failOnError => true, failOnError => false)", "'failOnError' is given twice"),
    ("SELECT ai_query('fake-chat', 'hi', modelParameters => 5)", "modelParameters must be a struct"),
    ("SELECT ai_query('fake-chat', 'hi', modelParameters => '{oops')", "modelParameters is not valid JSON"),
    ("SELECT ai_query('fake-chat', 'hi', modelParameters => {'max_tokenz': 5})", "Unknown parameter 'max_tokenz'"),
    ("SELECT ai_query('fake-chat', 'hi', modelParameters => {'messages': []})", "modelParameters cannot set 'messages'"),
    ("SELECT ai_query('fake-embeddings', 'hi', responseFormat => '{\"type\": \"json_object\"}')", "responseFormat needs a chat endpoint"),
    ("SELECT ai_query('fake-chat', 'hi', responseFormat => '{\"type\": \"xml\"}')", "response_format.type must be"),
])
def test_a_mistake_is_a_clear_error(fake, sql, expected):
    assert expected in error_of(sql)
    assert not fake.requests


def test_without_external_access_no_file_is_read(fake, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    message = error_of(f"SELECT * FROM '{secret}'", external_access=False)
    assert "needs a superuser" in message
    assert "lock" in error_of("SET enable_external_access = true", external_access=False).lower()
    assert column(run(f"SELECT * FROM '{secret}'")) == [1]  # the command's engine reads files


def test_fondasi_schema_says_why_it_is_not_attached(db):
    # The tests' database is in memory, and DuckDB's wheel has no sqlite extension anyway.
    message = error_of("SELECT name FROM fondasi.endpoints_servingendpoint")
    assert "Fondasi's database is not attached as 'fondasi'" in message


# --- python manage.py sql ---------------------------------------------------------------------


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("root", password="x-long-password")


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sql", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_a_table(admin):
    out, err = command("SELECT 1 AS one, 'two words' AS two, NULL AS three UNION ALL SELECT 22, 'x', 3 ORDER BY one")
    assert out.splitlines() == [
        "one | two       | three",
        "----+-----------+------",
        "1   | two words | NULL",
        "22  | x         | 3",
    ]
    assert err.startswith("2 rows, ")


def test_the_command_answers_ai_query(fake, admin):
    out, err = command("SELECT ai_query('fake-chat', 'Can you explain AI in ten words?') AS answer")
    assert out.splitlines()[2] == "Hello, world!"
    assert "1 answered by ai_query" in err


def test_the_command_writes_csv_and_json(fake, admin, tmp_path):
    csv_file, json_file = tmp_path / "out.csv", tmp_path / "out.json"
    out, _ = command("SELECT i AS id, ai_query('fake-embeddings', 'ab' || i) AS v, NULL AS n FROM range(2) t(i)",
                     "--csv", str(csv_file), "--json", str(json_file))
    assert f"Wrote 2 rows to {csv_file}" in out and f"Wrote 2 rows to {json_file}" in out
    assert csv_file.read_text().splitlines() == ["id,v,n", '0,"[0.0, 3.0, 0.5]",', '1,"[1.0, 3.0, 0.5]",']
    assert json.loads(json_file.read_text()) == [{"id": 0, "v": [0.0, 3.0, 0.5], "n": None},
                                                 {"id": 1, "v": [1.0, 3.0, 0.5], "n": None}]


def test_the_command_runs_as_the_first_superuser_or_the_user_named(db, django_user_model, caplog):
    caplog.set_level(logging.INFO, logger="fondasi.sql")
    with pytest.raises(CommandError, match="No superuser to run the SQL as"):
        command("SELECT 1")
    with pytest.raises(CommandError, match="No active user 'bob'"):
        command("SELECT 1", "--user", "bob")
    django_user_model.objects.create_user("bob")
    django_user_model.objects.create_superuser("root", password="x-long-password")
    command("SELECT 1", "--user", "bob")
    command("SELECT 1")
    users = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("sql user=")]
    assert users == ["user=bob", "user=root"]


def test_the_command_reports_a_mistake_without_a_traceback(fake, admin):
    with pytest.raises(CommandError) as caught:
        command("SELECT ai_query('nope', 'hi')")
    assert str(caught.value) == ("ai_query: Endpoint 'nope' does not exist. "
                                 "List endpoints with GET /api/2.0/serving-endpoints.")


def test_double_quoted_endpoint_and_request_are_strings_as_in_databricks_examples():
    # Databricks' page writes ai_query("endpoint", "text") (Spark SQL strings); DuckDB would read columns.
    calls = find_calls('SELECT ai_query("local-smollm2-chat", "Describe Databricks SQL in 30 words.") AS chat')
    assert calls[0].endpoint == "local-smollm2-chat"
    assert [literal for _, _, literal in calls[0].strings] == ["'local-smollm2-chat'", "'Describe Databricks SQL in 30 words.'"]


# --- column names -----------------------------------------------------------------------------


def test_an_unaliased_column_is_named_as_the_user_wrote_it_never_by_an_internal_name(fake):
    result = run("SELECT ai_query('fake-chat', q), ai_query('fake-chat', 'Summarise: ' ||  q,\n"
                 "       modelParameters => {'max_tokens': 3}), upper(ai_query(\"fake-chat\", q || '!')),\n"
                 "       ai_query('fake-chat', q, failOnError => false), ai_query('fake-chat', q) AS answer\n"
                 "FROM (VALUES ('a')) t(q)")
    assert result.columns == [
        "ai_query('fake-chat', q)",
        "ai_query('fake-chat', 'Summarise: ' || q, modelParameters => {'max_tokens': 3})",
        'upper(ai_query("fake-chat", q || \'!\'))',
        "ai_query('fake-chat', q, failOnError => false)",
        "answer",
    ]


def test_the_csv_has_the_same_headers_as_the_result(fake):
    result = run("SELECT ai_query('fake-embeddings', 'ab') , 1 AS one")
    out = io.StringIO()
    write_csv(result, out)
    assert out.getvalue().splitlines()[0] == "\"ai_query('fake-embeddings', 'ab')\",one"
