import sys
import threading

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from endpoints.sql import Engine, SqlError, SqlResult, cell_text, write_csv, write_json

#: Widest column of the printed table (longer values are cut with …; files keep them whole).
MAX_WIDTH = 60


class Command(BaseCommand):
    help = (
        "Run SQL on embedded DuckDB with ai_query(endpoint, request, ...) and print the result as a table, "
        "or write it with --csv / --json. Example: "
        "python manage.py sql \"SELECT ai_query('local-smollm2-chat', 'Can you explain AI in ten words?')\""
    )

    def add_arguments(self, parser):
        parser.add_argument("sql", help="the SQL to run ('-' reads it from standard input)")
        parser.add_argument("--user", help="who runs it (default: the first superuser)")
        parser.add_argument("--concurrency", type=int, help="ai_query requests at once per endpoint (default: SQL_CONCURRENCY, 8)")
        parser.add_argument("--timeout", type=float, default=0,
                            help="stop the query after SECONDS (default: no limit; Ctrl+C cancels)")
        parser.add_argument("--csv", metavar="FILE", help="write the rows to FILE as CSV")
        parser.add_argument("--json", metavar="FILE", help="write the rows to FILE as a JSON array of objects")

    def handle(self, *args, sql, user=None, concurrency=None, timeout=0, csv=None, json=None, **options):
        text = sys.stdin.read() if sql == "-" else sql
        try:
            engine = Engine(runner(user), concurrency=concurrency, timeout=max(0.0, timeout or 0.0))
            result = self.run(engine, text)
        except SqlError as exc:
            raise CommandError(exc.message) from None
        for path, write in ((csv, write_csv), (json, write_json)):
            if path:
                with open(path, "w", newline="", encoding="utf-8") as out:
                    write(result, out)
                self.stdout.write(f"Wrote {len(result.rows)} row{'s' * (len(result.rows) != 1)} to {path}")
        if not (csv or json):
            self.stdout.write(table(result))
        more = f" ({result.note})" if result.note else ""
        self.stderr.write(f"{len(result.rows)} row{'s' * (len(result.rows) != 1)}{more}, {result.seconds:.2f} s"
                          + (f", {result.ai_rows} answered by ai_query" if result.ai_rows else ""))

    def run(self, engine: Engine, text: str) -> SqlResult:
        """``engine.run(text)``, with the ai_query progress on a terminal, and Ctrl+C cancelling."""
        done = threading.Event()
        ticker = None
        if self.stderr.isatty():
            ticker = threading.Thread(target=self.tick, args=(engine, done), daemon=True)
            ticker.start()
        try:
            return engine.run(text)
        except KeyboardInterrupt:
            engine.cancel()
            raise CommandError("Cancelled.") from None
        finally:
            done.set()
            if ticker is not None:
                ticker.join()

    def tick(self, engine: Engine, done: threading.Event) -> None:
        shown = False
        while not done.wait(1):
            if engine.progress.total:
                self.stderr.write(f"\rai_query: {engine.progress.done} of {engine.progress.total} rows", ending="")
                shown = True
        if shown:
            self.stderr.write("\r\033[K", ending="")


def runner(username: str | None) -> str:
    """The user the SQL runs as: the one named, or the first superuser."""
    users = get_user_model().objects
    if username:
        user = users.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None or not user.is_active:
            raise SqlError(f"No active user '{username}'.")
        return user.get_username()
    user = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        raise SqlError("No superuser to run the SQL as: pass --user NAME, or create one with `python manage.py createsuperuser`.")
    return user.get_username()


def table(result: SqlResult) -> str:
    """The rows as a plain-text table (NULL shown as NULL, long values cut)."""
    if not result.columns:
        return "OK"
    cells = [[_cut(c) for c in result.columns]]
    cells += [[_cut(cell_text(v)) if v is not None else "NULL" for v in row] for row in result.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(result.columns))]
    lines = [" | ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _cut(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_WIDTH else text[: MAX_WIDTH - 1] + "…"
