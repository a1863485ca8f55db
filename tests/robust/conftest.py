"""One intra-op thread for these small models (much faster on a shared 2-core machine)."""

import pytest

from tests.conftest import one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield
