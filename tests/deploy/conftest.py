"""The API tests' fixtures (a data root with published datasets, consumers, consents) and HAProxy."""

import pytest

from tests.api.conftest import cfg, consents, keys, published  # noqa: F401 - fixtures reused, not copied
from tests.deploy.lb import haproxy_binary


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    path, why = haproxy_binary()
    if path is None:
        pytest.skip(
            f"HAProxy is not installed and `make haproxy` (apt-get install haproxy) could not install it: {why}"
        )
    return path
