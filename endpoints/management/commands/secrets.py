"""``python manage.py secrets put|list|delete``: the secrets provider configs refer to as
``{{secrets/<scope>/<key>}}`` (see :mod:`endpoints.secrets`). No value is ever printed."""
from __future__ import annotations

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from endpoints import secrets


class Command(BaseCommand):
    help = (
        "Store, list and delete the secrets that provider configs refer to as {{secrets/<scope>/<key>}}. "
        "Values are stored encrypted and never printed."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{put,list,delete}")
        put = actions.add_parser(
            "put",
            help="store a value (read from stdin, or asked for without echo), replacing any value there",
            description="Store a secret. The value is read from stdin when it is piped in "
            "(`pass show openai | python manage.py secrets put openai api_key`), else asked for without echo.",
        )
        put.add_argument("scope")
        put.add_argument("key")
        put.add_argument("--value", help="the value on the command line (it stays in your shell history)")
        listing = actions.add_parser("list", help="list scopes, keys and when each was last put (never values)")
        listing.add_argument("scope", nargs="?")
        delete = actions.add_parser("delete", help="delete a secret")
        delete.add_argument("scope")
        delete.add_argument("key")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except secrets.SecretsError as exc:
            raise CommandError(exc.message) from None

    def _put(self, scope: str, key: str, value: str | None, **options) -> None:
        for kind, name in (("scope", scope), ("key", key)):
            secrets.check_name(kind, name)  # before asking for a value
        if value is not None:
            self.stderr.write("Warning: a value given with --value stays in your shell history; pipe it in instead.")
        elif sys.stdin.isatty():
            value = getpass.getpass(f"Value for {secrets.reference(scope, key)} (not echoed): ")
        else:
            value = sys.stdin.read()
            # `echo value |` and files end with a newline that is no part of the value.
            value = value.removesuffix("\n").removesuffix("\r")
        created = secrets.put(scope, key, value)
        self.stdout.write(f"{'Created' if created else 'Updated'} {secrets.reference(scope, key)}.")

    def _list(self, scope: str | None, **options) -> None:
        entries = secrets.list_secrets(scope)
        if not entries:
            self.stdout.write(f"No secrets in scope '{scope}'." if scope else "No secrets.")
            return
        width = max(len(e.reference) for e in entries)
        for entry in entries:
            self.stdout.write(f"{entry.reference:<{width}}  updated {entry.updated_at:%Y-%m-%d %H:%M:%S %Z}")

    def _delete(self, scope: str, key: str, **options) -> None:
        secrets.delete(scope, key)
        self.stdout.write(f"Deleted {secrets.reference(scope, key)}.")
