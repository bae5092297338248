"""Fixtures of the deployment tests: the base in knative/, rendered once per session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.render import KNATIVE, Key, key, render, renderer_name


def pytest_report_header() -> str:
    return f"knative/ rendered by: {renderer_name()}"


@pytest.fixture(scope="session")
def objects() -> list[dict[str, Any]]:
    """Every object of the rendered base, as `kubectl apply -k knative/` would send it."""
    return render(KNATIVE)


@pytest.fixture(scope="session")
def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {key(obj): obj for obj in objects}
