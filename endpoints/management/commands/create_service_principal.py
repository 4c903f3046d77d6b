from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from endpoints.oauth import create_service_principal


class Command(BaseCommand):
    help = (
        "Create a service principal for OAuth machine-to-machine and print its client id and client "
        "secret on the last two lines (the secret is shown once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="its user name, e.g. ci-pipeline")

    def handle(self, *args, name, **options):
        name = name.strip()
        User = get_user_model()
        try:
            User._meta.get_field("username").clean(name, None)
        except ValidationError as exc:
            raise CommandError(f"--name {name!r} is not a valid user name: {' '.join(exc.messages)}") from None
        if User.objects.filter(username=name).exists():
            raise CommandError(f"A user named '{name}' already exists; choose another --name.")
        principal, secret = create_service_principal(name)
        self.stdout.write(
            f"Service principal '{name}' created. Configure clients with DATABRICKS_CLIENT_ID and "
            "DATABRICKS_CLIENT_SECRET; store the secret now, it is not shown again."
        )
        self.stdout.write("Client id, then client secret:")
        self.stdout.write(principal.client_id)
        self.stdout.write(secret)
