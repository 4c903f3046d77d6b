from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from endpoints.models import AccessToken


class Command(BaseCommand):
    help = "Create a personal access token and print it alone on the last line (it is shown once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="what the token is for")
        parser.add_argument("--user", default="admin", help="the owner (created if missing; default: admin)")

    def handle(self, *args, name, user, **options):
        if not name.strip():
            raise CommandError("--name must not be empty")
        owner, created = get_user_model().objects.get_or_create(
            username=user, defaults={"is_staff": True, "is_superuser": user == "admin"}
        )
        if created:
            owner.set_unusable_password()
            owner.save()
            self.stdout.write(f"Created user '{user}' (set a password with: python manage.py changepassword {user})")
        token, value = AccessToken.issue(owner, name.strip())
        self.stdout.write(f"Token '{token.name}' for {owner.get_username()} (store it now; it is not shown again):")
        self.stdout.write(value)
