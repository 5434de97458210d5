"""signq's own errors, in one tree (as Dramatiq's ``errors`` module is): each names what is wrong
and what to check, in words for the person who can fix it. The command line prints any of them
as one line and exits with the class's ``exit_code``; embedders catch ``SignqError``.

The JSMS client's errors (``worker.jsms.errors``) are a tree of their own: the client stands
alone, below this package's core.
"""

from __future__ import annotations

# sysexits.h: EX_USAGE-like 2 for what a person gave (input, configuration, a refused
# operation), as argparse exits; 69 (EX_UNAVAILABLE) for a part that cannot be had here.
USAGE = 2
UNAVAILABLE = 69


class SignqError(Exception):
    """The root of signq's errors; the message says what is wrong and what to check."""

    exit_code = USAGE


class SettingsError(SignqError, ValueError):
    """An environment variable holds a value signq cannot use; the message names it."""


class FileProblem(SignqError, ValueError):
    """A file that cannot be used; the message names it (and the line)."""


class AccountError(SignqError, ValueError):
    """An account operation that cannot be done; the message says why."""


class AccountExists(AccountError):
    """An account of that name is registered already."""


class SecretKeyError(AccountError):
    """This process's SIGNQ_SECRET_KEY cannot open a stored secret: the process is set up
    wrong, not the account (nothing about the tenant is paused for it)."""


class JobError(SignqError, ValueError):
    """A job operation that cannot be done; the message says why."""


class OnboardError(SignqError, ValueError):
    """A file that cannot be onboarded at all (unreadable, wrong columns, bad rows refused)."""


class RowsRefused(OnboardError):
    """A file refused whole because some rows are bad (the strict mode); ``problems`` holds
    each bad row's line and reason."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} bad row(s); nothing was enqueued")
        self.problems = problems


class WebhookError(SignqError, ValueError):
    """A webhook endpoint operation that cannot be done (a bad URL, secret or filter, an
    unknown endpoint); the message says why."""


class LayoutError(SignqError, RuntimeError):
    """Redis holds signq data in a key layout this signq cannot use as it is (``signq
    migrate``, or a newer signq)."""


class EmbeddedRedisError(SignqError, RuntimeError):
    """No redis-server binary could be found or started."""

    exit_code = UNAVAILABLE
