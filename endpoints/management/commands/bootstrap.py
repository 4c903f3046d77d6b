import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from endpoints.models import AccessToken


class Command(BaseCommand):
    help = (
        "First-run set-up for `make run`: on a database with no token, create one for 'admin' and, "
        "when 'admin' cannot sign in yet, give it a password; both are printed once."
    )

    def handle(self, *args, **options):
        if AccessToken.objects.exists():
            self.stdout.write("Tokens exist; create another with: python manage.py create_token --name NAME")
            return
        self.stdout.write("First run: creating an access token for user 'admin'.")
        call_command("create_token", name="first-run", user="admin", superuser=True, stdout=self.stdout)
        admin = get_user_model().objects.get(username="admin")
        if not admin.has_usable_password():
            # The pages need a signed-in person; a password shown once, like the token.
            password = secrets.token_urlsafe(12)
            admin.set_password(password)
            admin.save(update_fields=["password"])
            self.stdout.write(
                f"Sign in to the pages at /login/ as 'admin' with password {password} "
                "(change it with: python manage.py changepassword admin)."
            )
