"""``python manage.py secrets put|list|delete|acl``: the secrets provider configs refer to as
``{{secrets/<scope>/<key>}}`` (see :mod:`endpoints.secrets`), and who may use them. No value is
ever printed.

``secrets acl put SCOPE READ|WRITE|MANAGE --user NAME`` (or ``--group NAME``) grants a permission
on a scope (replacing the one that principal had), ``secrets acl delete SCOPE --user NAME`` takes it
back, ``secrets acl list [SCOPE]`` shows the grants. The command runs as the server's operator
(:data:`endpoints.secrets.OPERATOR`), who has every permission."""
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
        actions = parser.add_subparsers(dest="action", required=True, metavar="{put,list,delete,acl}")
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
        acl = actions.add_parser(
            "acl",
            help="grant, list and revoke READ / WRITE / MANAGE on a scope for a user or a group",
            description="Secret scope permissions, as Databricks' secret ACLs: READ lists a scope's keys and lets "
            "endpoints refer to its secrets; WRITE also puts and deletes them; MANAGE also changes the ACLs. "
            "Superusers have MANAGE on every scope.",
        )
        acl_actions = acl.add_subparsers(dest="acl_action", required=True, metavar="{put,list,delete}")
        acl_put = acl_actions.add_parser("put", help="give a user or a group a permission on a scope")
        acl_put.add_argument("scope")
        acl_put.add_argument("permission", type=str.upper, choices=secrets.LEVELS)
        acl_delete = acl_actions.add_parser("delete", help="take back what a user or a group has on a scope")
        acl_delete.add_argument("scope")
        for sub in (acl_put, acl_delete):
            who = sub.add_mutually_exclusive_group(required=True)
            who.add_argument("--user", help="a user's name")
            who.add_argument("--group", help="a group's name")
        acl_list = acl_actions.add_parser("list", help="list the grants (of one scope)")
        acl_list.add_argument("scope", nargs="?")

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

    def _acl(self, acl_action: str, **options) -> None:
        getattr(self, f"_acl_{acl_action}")(**options)

    def _acl_put(self, scope: str, permission: str, user: str | None, group: str | None, **options) -> None:
        principal = self._principal(user, group)
        created = secrets.acl_put(scope, permission, **principal)
        self.stdout.write(f"{'Granted' if created else 'Set'} {permission} on scope '{scope}' for {self._who(user, group)}.")

    def _acl_delete(self, scope: str, user: str | None, group: str | None, **options) -> None:
        secrets.acl_delete(scope, **self._principal(user, group))
        self.stdout.write(f"Removed the ACL of {self._who(user, group)} on scope '{scope}'.")

    def _acl_list(self, scope: str | None, **options) -> None:
        entries = secrets.acl_list(scope)
        if not entries:
            self.stdout.write(
                (f"No ACLs on scope '{scope}'." if scope else "No ACLs.") + " Superusers have MANAGE on every scope."
            )
            return
        width = max(len(e.scope) for e in entries)
        for entry in entries:
            self.stdout.write(f"{entry.scope:<{width}}  {entry.permission:<6}  {entry.kind} {entry.principal}")

    @staticmethod
    def _who(user: str | None, group: str | None) -> str:
        return f"user '{user}'" if user is not None else f"group '{group}'"

    @staticmethod
    def _principal(user: str | None, group: str | None) -> dict:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        if user is not None:
            found = get_user_model().objects.filter(username=user).first()
            if found is None:
                raise secrets.SecretsError(f"There is no user '{user}'.")
            return {"user": found}
        found = Group.objects.filter(name=group).first()
        if found is None:
            raise secrets.SecretsError(f"There is no group '{group}' (create it in the admin under Groups).")
        return {"group": found}
