"""Exit codes (a user-facing contract, see README) and the exception hierarchy.

Library code raises one of these; the CLI layer maps them to exit codes in one place
(`agent.commands.common.run_cli`). Never report a failure with exit code 0.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2  # bad flag, no provider configured, path is not a directory
    TESTS_FAILING = 3  # fix: tests still failing when a limit was reached
    LIMIT = 4  # a cost, time or turn limit stopped `ask`
    PROVIDER = 5  # provider error after retries (auth, network, rate limit, context overflow)
    INTERRUPTED = 130  # Ctrl-C


class V4CodeError(Exception):
    """Base class of every error v4code reports to the user."""

    exit_code: ExitCode = ExitCode.INTERNAL
    status: str = "error"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(V4CodeError):
    exit_code = ExitCode.USAGE
    status = "usage_error"


class ConfigError(UsageError):
    status = "config_error"


class ProviderError(V4CodeError):
    """The model provider failed after retries (network, auth, rate limit, context overflow)."""

    exit_code = ExitCode.PROVIDER
    status = "provider_error"
