"""The one exception type fattr raises for bad input.

Messages start with the method's name, show what arrived and what was expected, and say how to
fix it (the einops pattern). `FattrError` is a `ValueError`, so `except ValueError` catches it;
`FattrTypeError` is also a `TypeError` for arguments of the wrong kind.
"""

from __future__ import annotations


class FattrError(ValueError):
    """Bad input to a fattr method: the message names the argument and the fix."""


class FattrTypeError(FattrError, TypeError):
    """An argument of the wrong kind (for example a plain function where a module is needed)."""
