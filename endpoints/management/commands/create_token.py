from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from endpoints.models import AccessToken


class Command(BaseCommand):
    help = (
        "Create a personal access token and print it alone on the last line (it is shown once). "
        "A user that does not exist yet is created as an ordinary user unless --staff or --superuser is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="what the token is for")
        parser.add_argument("--user", default="admin", help="the owner (created if missing; default: admin)")
        parser.add_argument("--staff", action="store_true",
                            help="create a missing user as staff (may create and manage every endpoint)")
        parser.add_argument("--superuser", action="store_true",
                            help="create a missing user as a superuser (implies --staff)")

    def handle(self, *args, name, user, staff=False, superuser=False, **options):
        if not name.strip():
            raise CommandError("--name must not be empty")
        # Nobody becomes staff by accident: only the flags grant it, and only to a user created here.
        owner, created = get_user_model().objects.get_or_create(
            username=user, defaults={"is_staff": staff or superuser, "is_superuser": superuser}
        )
        if created:
            owner.set_unusable_password()
            owner.save()
            role = "superuser" if superuser else "staff user" if staff else "user (not staff)"
            self.stdout.write(
                f"Created {role} '{user}' (set a password with: python manage.py changepassword {user})"
            )
        elif (staff and not owner.is_staff) or (superuser and not owner.is_superuser):
            self.stderr.write(
                f"User '{user}' exists: its roles are unchanged (--staff and --superuser apply only to a user "
                "created here; grant roles in the admin)."
            )
        token, value = AccessToken.issue(owner, name.strip())
        self.stdout.write(f"Token '{token.name}' for {owner.get_username()} (store it now; it is not shown again):")
        self.stdout.write(value)
