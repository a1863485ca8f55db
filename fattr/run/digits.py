"""Moved to `fattr.data.digits` (the metrics import it, and `fattr.run` is the runner); this
name stays importable for code written against it."""

from fattr.data.digits import accuracy, digits_cnn, load_digits, train, trained_digits_cnn

__all__ = ["accuracy", "digits_cnn", "load_digits", "train", "trained_digits_cnn"]
