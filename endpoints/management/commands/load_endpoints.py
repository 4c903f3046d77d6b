from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from endpoints.config import ConfigError, apply, load_file


class Command(BaseCommand):
    help = "Apply the endpoints file (FONDASI_ENDPOINTS_FILE, default endpoints.yaml) to the registry. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="the file to load (default: the configured endpoints file)")

    def handle(self, *args, path=None, **options):
        path = path or settings.ENDPOINTS_FILE
        try:
            decls = load_file(path)
        except ConfigError as exc:
            raise CommandError(f"{exc}\nNothing was changed; the last good configuration keeps serving.") from None
        changes = apply(decls)
        self.stdout.write(f"Loaded {path}")
        for line in changes.lines():
            self.stdout.write(line)
