"""Oversight fixtures: the dispatch fixtures (settings, services) reused as they are."""

from tests.integration.dispatch.conftest import make_settings, services  # noqa: F401
