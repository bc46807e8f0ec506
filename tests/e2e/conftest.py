"""The e2e tier uses the integration tier's real servers."""

from tests.integration.conftest import prefect_server  # noqa: F401
