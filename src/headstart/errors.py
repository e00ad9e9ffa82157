"""Errors a user can act on.

Every message says what happened, what was expected and how to fix it, echoing the value
received. The CLI prints a ``HeadstartError`` without a traceback and exits with status 2.
"""

from __future__ import annotations


class HeadstartError(Exception):
    """A problem with the user's input, files or settings, explained in plain words."""


class NotFittedError(HeadstartError, AttributeError):
    """An estimator was used before ``fit`` (or ``load``)."""
