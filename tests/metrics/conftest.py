"""Fixtures for the metric tests: a trained digits CNN (trained once per session)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import one_thread


@pytest.fixture(scope="session")
def digits_model():
    """(model, (x_train, y_train, x_test, y_test)): the digits CNN, about 95% test accuracy."""
    from fattr.data.digits import trained_digits_cnn

    torch.manual_seed(0)
    with one_thread():
        return trained_digits_cnn(seed=0, epochs=6)
