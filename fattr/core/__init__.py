"""Shared machinery: model functions, targets, baselines, quadrature, chunked evaluation."""

from fattr.core.model import FunctionalModel, PerExample, functional, per_example, trainable

__all__ = ["FunctionalModel", "PerExample", "functional", "per_example", "trainable"]
