"""The HTTP session of wsipipe's S3 clients: aiobotocore's, without aiohttp's hidden re-send.

aiohttp re-sends an idempotent request (GET, HEAD, PUT, DELETE ...) once by itself when its
connection closes before an answer arrives (``ClientOSError``, ``ServerDisconnectedError``;
meant for a kept-alive connection the server had closed meanwhile). botocore never sees that
re-send, so each of :class:`~wsipipe.storage.RetryPolicy`'s tries could reach the server
twice. This module imports aiobotocore: only for ``s3://`` (the ``cloud`` extra).
"""

from __future__ import annotations

from typing import Any

from aiobotocore.httpsession import AIOHTTPSession

__all__ = ["OneTryHTTPSession"]


class OneTryHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp session, each of whose requests goes out once per botocore try.

    A connection that closes without an answer is then botocore's ``ConnectionClosedError``,
    one failed try that :class:`~wsipipe.storage.RetryPolicy` counts and retries (on a new
    connection). Used through ``config_kwargs={"http_session_cls": OneTryHTTPSession}``
    (:func:`~wsipipe.storage.fs_options`).
    """

    async def _get_session(self, proxy_url: Any) -> Any:
        session = await super()._get_session(proxy_url)
        if getattr(session, "_retry_connection", False):  # aiohttp's switch (its own test client turns it off)
            session._retry_connection = False
        return session
