"""Errors a user can cause; the CLI and REPL render them as one line."""


class BigCodeError(Exception):
    """A mistake the user can fix: the message says what went wrong and what to do."""

    exit_code = 1


class ConfigError(BigCodeError):
    """A config.json that is not a usable GPTBigCode config."""


class CheckpointError(BigCodeError):
    """Weights that are missing, truncated, corrupt or do not fit the config."""


class BackendError(BigCodeError):
    """An attention backend, device or dtype this machine cannot run."""


class ModelNotFoundError(BigCodeError):
    """A model name that resolves nowhere."""


class TokenizerError(BigCodeError):
    """A tokenizer that is missing, unreadable or lacks what a command needs."""


class InputError(BigCodeError):
    """Bad user input: a file, a record, an option value."""


class StoreError(BigCodeError):
    """A problem with the local checkpoint cache."""


class UsageError(InputError):
    """An option value or combination of options that cannot work: exit code 2, like a parse error."""

    exit_code = 2


class NotDownloadedError(ModelNotFoundError):
    """A hub model in neither our cache nor the Hugging Face cache: `bigcode models pull` gets it."""
