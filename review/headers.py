"""Security headers on every HTTP response of the workbench: an ASGI middleware (no gradio import).

``Referrer-Policy: no-referrer`` keeps an invitation or any other URL out of the ``Referer`` of
the requests a page makes; the Content-Security-Policy lets the page load only from its own
origin and never be framed (``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for older
browsers). Gradio's front end needs inline scripts and styles and ``eval`` (event ``js`` and
``js_on_load`` run as functions), so those are allowed; everything else is the app's own origin.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "media-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every HTTP response (replacing any of the same name).

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would buffer Gradio's
    server-sent event streams.
    """

    def __init__(self, app):
        self.app = app
        self.names = {name.lower().encode() for name, _ in SECURITY_HEADERS}
        self.encoded = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message = {**message, "headers": kept + self.encoded}
            await send(message)

        await self.app(scope, receive, send_with_headers)
