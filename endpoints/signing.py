"""Signatures of the local model's reasoning.

A reasoning block carries a signature so that reasoning sent back in a later turn can be trusted
to be the model's own (a client could otherwise put words in the model's mouth). Vendors sign
their own blocks and Fondasi passes those through untouched; for the embedded model Fondasi
signs with an HMAC-SHA256 of the reasoning text under a key derived from ``SECRET_KEY``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "fondasi.v1."
_SALT = b"fondasi.reasoning-signature"


def _key() -> bytes:
    from django.conf import settings

    # A key of its own, derived from the server secret: a signature reveals nothing usable elsewhere.
    return hashlib.sha256(_SALT + settings.SECRET_KEY.encode()).digest()


def sign_reasoning(text: str) -> str:
    """The signature of ``text``: ``fondasi.v1.`` then a URL-safe base64 HMAC-SHA256."""
    mac = hmac.new(_key(), text.encode("utf-8"), hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def verify_reasoning(text: str, signature: str | None) -> bool:
    """Whether ``signature`` is this server's signature of exactly ``text`` (constant time)."""
    if not signature:
        return False
    return hmac.compare_digest(sign_reasoning(text), signature)
