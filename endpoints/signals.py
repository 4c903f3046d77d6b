"""Drop this process's cached registry and token checks as soon as they change here."""
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import auth, registry
from .models import AccessToken, ServedEntity, ServingEndpoint


@receiver([post_save, post_delete], sender=ServingEndpoint)
@receiver([post_save, post_delete], sender=ServedEntity)
def _registry_changed(**kwargs) -> None:
    registry.invalidate()


@receiver([post_save, post_delete], sender=AccessToken)
def _token_changed(**kwargs) -> None:
    auth.forget_tokens()
