"""Fixtures for the metric tests: a trained digits CNN (trained once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Train the tiny digits CNN on one thread: on a loaded 2-core machine two threads make
    its small batches about 10x slower (measured), and one is as fast when idle."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_model():
    """(model, (x_train, y_train, x_test, y_test)): the digits CNN, about 95% test accuracy."""
    from fattr.data.digits import trained_digits_cnn

    torch.manual_seed(0)
    with one_thread():
        return trained_digits_cnn(seed=0, epochs=6)
