"""Shared test set-up: hypothesis profiles picked by ``HYPOTHESIS_PROFILE``, and fixtures.

- ``ci`` (CI's default): few examples, no deadline — bounded time on 2 cores;
- ``dev`` (the default here): a few more;
- ``thorough``: fuzzing with many thousands of examples (``make test-thorough``).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="module")
def one_thread():
    """Small models train fastest (and reproducibly) on one thread of a busy 2-core machine;
    a module uses it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
