"""Whether a recipe may run without being confirmed: what it would execute, read and reach.

A recipe is data, but some of its fields act on the machine as the invoking user: the server
binary or image it starts, the arguments, settings and environment given to the server
(PostgreSQL's archive_command runs a shell command, redis-server's --loadmodule loads a
library), secret variables and files it reads and sends to the endpoint, an endpoint off this
machine, a bind off loopback. A recipe file under the project's recipes/ is the user's own; any
other one - the embedded recipe of a bundle (`aifb rerun`), a file elsewhere - that names any
of these is refused until the user has seen the list and passed --trust-recipe.

The recipe hash in run.json is no defence here (the bundle's author can recompute it); the
list is what the user judges.
"""

from __future__ import annotations

from pathlib import Path

from aifb import endpoints
from aifb.errors import AifbError
from aifb.paths import code_root, work_root
from aifb.workflow.recipe import load_recipe

# service fields that make a server run something, with the words for the list
EXECUTES = {
    "binary": "starts the program {v}",
    "image": "runs the container image {v}",
    "args": "passes these arguments to the server: {v}",
    "engine_args": "passes these engine arguments to the server: {v}",
    "settings": "sets these server settings (some run commands, e.g. archive_command): {v}",
    "env": "sets this server environment: {v}",
    "run_as": "runs the server as user {v}",
    "models_dir": "serves models from {v}",
}
READS = ("password_file", "api_key_file", "access_key_file", "secret_key_file",
         "password_env", "api_key_env", "access_key_env", "secret_key_env")


class UntrustedRecipe(AifbError):
    """A recipe from outside recipes/ that acts on the machine, not confirmed."""


def exposure(recipe: dict) -> list[str]:
    """What running `recipe` would execute, read and reach beyond a plain local deployment of
    its kind, one line each (empty: nothing)."""
    service = recipe.get("service") or {}
    out = [f"service.{k}: " + text.format(v=_show(service[k]))
           for k, text in EXECUTES.items() if service.get(k) not in (None, [], {}, "")]
    for k in READS:
        if service.get(k):
            what = "file" if k.endswith("_file") else "environment variable"
            out.append(f"service.{k}: reads the secret {what} {service[k]} and sends it to the "
                       "service")
    endpoint = service.get("endpoint")
    if isinstance(endpoint, str):
        try:
            host = endpoints.split(service.get("kind", ""), endpoint).hostname
        except AifbError:
            host = None
        if not endpoints.is_loopback(host):
            out.append(f"service.endpoint: sends the load (and any secret) to "
                       f"{endpoints.redact(endpoint)}, not on this machine")
    host = service.get("host")
    if host and not endpoints.is_loopback(str(host)):
        out.append(f"service.host: the server listens on {host}, reachable from other machines")
    if service.get("allow_unauthenticated"):
        out.append("service.allow_unauthenticated: the server may listen off loopback without "
                   "authentication")
    prompts = (recipe.get("workload") or {}).get("prompts")
    if isinstance(prompts, dict) and prompts.get("path"):
        out.append(f"workload.prompts.path: reads the file {prompts['path']}")
    return out


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def is_project_recipe(path: str | Path | None) -> bool:
    """A file under recipes/ of the work root or of the checkout: the user's own."""
    if not path:
        return False
    p = Path(path)
    p = (p if p.is_absolute() else work_root() / p).resolve()
    return any(p.is_relative_to((root / "recipes").resolve()) for root in (work_root(), code_root()))


def same_as_project_recipe(run: dict, recipe: dict) -> bool:
    """A bundle whose embedded recipe is what its recipe file under recipes/ (with the recorded
    overrides) gives today: rerunning it runs the user's own recipe."""
    path = run.get("recipe_path")
    if not is_project_recipe(path):
        return False
    p = Path(path) if Path(path).is_absolute() else work_root() / path
    try:
        return load_recipe(p, run.get("overrides") or []) == recipe
    except AifbError:
        return False


def check(recipe: dict, *, origin: str, trusted: bool, log) -> None:
    """Refuse a recipe from `origin` that acts on the machine unless `trusted` (--trust-recipe);
    with --trust-recipe the list is still shown."""
    lines = exposure(recipe)
    if not lines:
        return
    listing = "\n  ".join(lines)
    if trusted:
        log(f"{origin}: running with --trust-recipe; it will:\n  {listing}")
        return
    raise UntrustedRecipe(
        f"{origin} is not a recipe under this project's recipes/, and it would:\n  {listing}\n"
        "Read it; if you trust it, run again with --trust-recipe.")
