"""HTTP plumbing the REST adapters share: transport failures and JSON bodies."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.base import ManagerUnavailable

__all__ = ["json_body", "send"]


def send(client: httpx.Client, method: str, path: str, *, target: str, manager: str,
         url: str, timeout: float, what: str, **kwargs: Any) -> httpx.Response:
    """``client.request(method, path, **kwargs)``; a timeout or a connection that fails is
    :class:`ManagerUnavailable`, worded with ``manager`` (e.g. ``slurmrestd``) at ``url``."""
    try:
        return client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise ManagerUnavailable(f"target {target!r}: {manager} at {url} did not answer "
                                 f"within {timeout:g} s to {what}") from None
    except httpx.TransportError as exc:
        raise ManagerUnavailable(f"target {target!r}: cannot reach {manager} at {url} "
                                 f"to {what}: {exc}") from None


def json_body(response: httpx.Response) -> Any:
    """The decoded body, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError among them
        return None
