from django.core.management import call_command
from django.core.management.base import BaseCommand

from endpoints.models import AccessToken


class Command(BaseCommand):
    help = "First-run set-up for `make run`: on a database with no token, create one and print it once."

    def handle(self, *args, **options):
        if AccessToken.objects.exists():
            self.stdout.write("Tokens exist; create another with: python manage.py create_token --name NAME")
            return
        self.stdout.write("First run: creating an access token for user 'admin'.")
        call_command("create_token", name="first-run", user="admin", stdout=self.stdout)
