"""One POST with httpx, turned into :class:`NotificationError` with secrets removed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from strongroom.notify.base import RETRYABLE_STATUSES, NotificationError, scrub

if TYPE_CHECKING:
    import httpx


def post(
    client: httpx.Client | None,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    label: str,
    secrets: Iterable[str],
) -> httpx.Response:
    """POST ``body``; return the 2xx response or raise ``NotificationError``.

    ``label`` names the endpoint in messages (already redacted); ``secrets`` are removed
    from any text that comes back from the network.
    """
    import httpx  # here, not at module level: every CLI start imports this module

    secrets = tuple(secrets)
    try:
        if client is None:
            with httpx.Client(timeout=timeout, follow_redirects=False) as own:
                response = own.post(url, content=body, headers=dict(headers))
        else:
            response = client.post(url, content=body, headers=dict(headers), timeout=timeout)
    except httpx.TimeoutException:
        raise NotificationError(f"{label}: timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        detail = scrub(str(exc), secrets) or "no detail"
        raise NotificationError(f"{label}: {type(exc).__name__}: {detail}") from None
    if response.is_success:
        return response
    text = scrub(response.text, secrets)
    raise NotificationError(
        f"{label}: HTTP {response.status_code}" + (f": {text}" if text else ""),
        transient=response.status_code in RETRYABLE_STATUSES,
    )
