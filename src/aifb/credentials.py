"""Secrets a recipe names but never holds: read from the environment or a file, the same way
for the harness (clients) and for the servers it deploys.

    service.password_env / password_file -> "password"
    service.api_key_env / api_key_file   -> "api_key"      (a file wins over a variable)
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ServiceError


def load_secrets(service: dict) -> dict:
    """{"password": ..., "api_key": ...} as far as the recipe names them; ServiceError naming
    the field when a variable is unset or a file unreadable."""
    secrets = {}
    for field, key in (("password_env", "password"), ("api_key_env", "api_key")):
        if env := service.get(field):
            if env not in os.environ:
                raise ServiceError(f"service.{field} names {env}, which is not set in the environment")
            secrets[key] = os.environ[env]
    for field, key in (("password_file", "password"), ("api_key_file", "api_key")):
        if path := service.get(field):
            try:
                secrets[key] = Path(path).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ServiceError(f"service.{field} {path}: {exc.strerror}") from None
    return secrets


def api_key(service: dict) -> str | None:
    """The key a server is started with: the api_key, else the password - the order in which
    the clients send them (aifb.clients.vector.secret_from, the LLM clients)."""
    s = load_secrets(service)
    return s.get("api_key") or s.get("password") or None
