"""Secrets a recipe names but never holds: read from the environment or a file, the same way
for the harness (clients) and for the servers it deploys.

    service.password_env / password_file -> "password"
    service.api_key_env / api_key_file   -> "api_key"      (a file wins over a variable)

A file is read only when the invoking user allowed its path - in AIFB_SECRET_FILES (paths
separated by `:`) or in `secret_files:` of config/config.yaml - never because a recipe (e.g.
the embedded recipe of someone else's bundle) names it: a recipe pointing password_file at
/etc/shadow and endpoint at a listener would otherwise send that file out in AUTH.
"""

from __future__ import annotations

import os
from pathlib import Path
from secrets import token_urlsafe

import yaml

from aifb import yamlio
from aifb.errors import ServiceError
from aifb.paths import work_root

ALLOW_ENV = "AIFB_SECRET_FILES"
RUN_PASSWORD_ENV = "AIFB_RUN_PASSWORD"


def with_run_password(spec: dict, service_cls) -> dict:
    """`spec`, for a server this run deploys of a kind that must not run open
    (service_cls.needs_password: PostgreSQL, whose superuser can run programs, and Redis) and
    with no password named: a random password for this run, put in this process's environment
    and named by service.password_env, so that the server (a local child or a Slurm job, which
    inherits the environment) and every client job read it from there. It is in no file."""
    if (spec.get("endpoint") or not getattr(service_cls, "needs_password", False)
            or spec.get("password_env") or spec.get("password_file")):
        return spec
    os.environ[RUN_PASSWORD_ENV] = token_urlsafe(24)
    return dict(spec, password_env=RUN_PASSWORD_ENV)


def service_secrets(spec: dict, service_cls) -> dict:
    """The secrets a benchmark's clients use: load_secrets plus the kind's own (e.g. the S3
    access and secret keys), the same in the benchmark job and every extra client job."""
    secrets = load_secrets(spec)
    kind_secrets = getattr(service_cls, "secrets", None)
    if callable(kind_secrets):
        secrets.update(kind_secrets(spec))
    return secrets


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
            secrets[key] = read_secret_file(field, path)
    return secrets


def allowed_secret_files() -> set[Path]:
    """The secret files the invoking user allowed (resolved paths)."""
    paths = [p for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p]
    cfg = work_root() / "config" / "config.yaml"
    try:
        listed = (yamlio.load(cfg.read_text(encoding="utf-8")) or {}).get("secret_files") or []
    except (OSError, yaml.YAMLError, AttributeError):
        listed = []
    paths += [str(p) for p in listed if isinstance(p, str)]
    return {Path(p).expanduser().resolve() for p in paths}


def read_secret_file(field: str, path: str) -> str:
    """The stripped contents of the secret file service.<field> names, if the user allowed it."""
    if Path(path).expanduser().resolve() not in allowed_secret_files():
        raise ServiceError(
            f"service.{field} {path} is not a secret file you allowed: a recipe alone cannot make "
            f"aifb read a file (add the path to {ALLOW_ENV}, or to secret_files: in "
            "config/config.yaml)")
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ServiceError(f"service.{field} {path}: {exc.strerror}") from None


def api_key(service: dict) -> str | None:
    """The key a server is started with: the api_key, else the password - the order in which
    the clients send them (aifb.clients.vector.common.secret_from, the LLM clients)."""
    s = load_secrets(service)
    return s.get("api_key") or s.get("password") or None
