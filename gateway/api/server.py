"""The HTTP/1.1 protocol ``gateway serve`` runs under uvicorn.

uvicorn answers a request its parser refuses (a bad request line, header, ``Content-Length``
or chunked framing — before any ASGI app sees it) with a plain-text ``400 Invalid HTTP request
received.``. :class:`GatewayHttpProtocol` is uvicorn's httptools protocol with only that
answer changed to the OpenAI error shape every other gateway answer has.

Such a request leaves no audit record when the parser refuses it before its headers are
complete: there is no request yet (no method, path or key) to record. When the framing breaks
later, mid-body (a bad chunk size), the app is already serving it: the protocol marks the
request's scope (:data:`MALFORMED_SCOPE_KEY`) before closing, and the app records it as the
``invalid`` 400 ``malformed_http`` the client got, not as a hang-up.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import InvalidRequest

__all__ = ["MALFORMED_HTTP_BODY", "MALFORMED_HTTP_MESSAGE", "MALFORMED_SCOPE_KEY", "GatewayHttpProtocol"]

MALFORMED_SCOPE_KEY = "sovereign_gateway.malformed_http"
"""ASGI scope key set (True) on a request whose body framing the parser refused mid-body."""

MALFORMED_HTTP_MESSAGE = (
    "malformed HTTP request: the request line, a header, Content-Length or the chunked framing is not "
    "valid HTTP/1.1 (RFC 9112)"
)

#: The 400 body for a request uvicorn's parser refuses (bytes: immutable, built once).
MALFORMED_HTTP_BODY: bytes = orjson.dumps(InvalidRequest(MALFORMED_HTTP_MESSAGE, code="malformed_http").body())


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering unparseable requests with a JSON 400 body
    ``{"error": {"message", "type": "invalid_request_error", "param": null, "code":
    "malformed_http"}}`` and ``Connection: close`` (the stream cannot be resynchronised)."""

    def send_400_response(self, msg: str) -> None:
        """Write the OpenAI-shaped 400 and close the connection; ``msg`` (uvicorn's text) is
        already in uvicorn's warning log. A request the app is already serving is marked
        (:data:`MALFORMED_SCOPE_KEY`) so its record says what the client got."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope[MALFORMED_SCOPE_KEY] = True  # type: ignore[literal-required]
        body = MALFORMED_HTTP_BODY
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        self.transport.close()
