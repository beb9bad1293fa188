"""Exceptions that carry a message meant for the user (printed without a traceback)."""


class AifbError(Exception):
    """Base class: a problem the user can act on; the CLI prints str(exc) and exits non-zero."""

    exit_code = 2


class RecipeError(AifbError):
    """The recipe (or an override) is malformed or invalid; names the field and the problem."""


class ConfigError(AifbError):
    """config/config.yaml or a target definition is invalid."""


class NotImplementedKind(AifbError):
    """A service kind that the schema knows but this version cannot run yet."""


class ServiceError(AifbError):
    """The service could not be deployed, reached, or used (before or during the run)."""

    def __init__(self, message: str, log_tail: str | None = None):
        super().__init__(message)
        self.log_tail = log_tail


class RegistryError(AifbError):
    """Unknown benchmark ID, or the registry of IDs is inconsistent."""


class CorruptFileError(AifbError, ValueError):
    """A file of ours (run.json, summary.json, a registry entry) that does not parse: truncated
    or edited. A ValueError too, so code that tolerates an unreadable file keeps doing so."""
