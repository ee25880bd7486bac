"""Who may talk to the dashboard: the token check, the Host check and the request header.

With a token (required by `serve` on any non-loopback address) every request, pages, API and
assets alike, must carry `Authorization: Bearer <token>`, or the session cookie that a
browser gets by opening any page once with `?token=<token>`. The cookie holds an HMAC of the
token rather than the token itself, is HttpOnly (scripts cannot read it), SameSite=Strict
(other sites' pages cannot send it) and Secure when the request came over HTTPS (directly,
or through a TLS proxy that says so in `X-Forwarded-Proto`). Tokens are compared with
`hmac.compare_digest`. Off loopback the token crosses the network in every request, so the
server belongs behind a TLS proxy.

Without a token the server is on loopback only, where the remaining risk is a web page in the
user's own browser: a DNS-rebinding page reaches 127.0.0.1 under a foreign Host name, so
requests must name a loopback host.

In every mode a state-changing request (anything but GET and HEAD) must carry the
`X-Dagrun-Request` header: a cross-site form can POST without a preflight, and the browser
would attach the session cookie (SameSite is per site, not per origin), but a form cannot set
a header. The dashboard's own scripts send it with every POST.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from urllib.parse import urlencode

from tornado.web import RequestHandler

SESSION_COOKIE = "dagrun_session"
REQUEST_HEADER = "X-Dagrun-Request"
"""The header the dashboard's own scripts send with every POST (see the module docstring)."""
_SAFE_METHODS = frozenset({"GET", "HEAD"})

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # "", "0.0.0.0"-style wildcards are addresses; other names may be anything
        return False


def session_cookie_value(token: str) -> str:
    """What the session cookie holds for `token`: a keyed hash, so the cookie is not the token."""
    return hmac.new(token.encode(), b"dagrun-dashboard-session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _host_name(host_header: str) -> str:
    """The host part of a Host header ("127.0.0.1:4200" -> "127.0.0.1", "[::1]:80" -> "::1")."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class GuardedHandler(RequestHandler):
    """Base of every handler: refuses requests that fail the checks in the module docstring.

    Reads `dagrun_token` (str or None) from the application settings.
    """

    def prepare(self) -> None:
        token: str | None = self.settings.get("dagrun_token")
        if token is None:
            if not is_loopback(_host_name(self.request.host)):
                self.deny(403, f"Host {self.request.host!r} is not a loopback name")
                return
        elif not self._authorized(token):
            self._login_or_refuse(token)
            return
        if self.request.method not in _SAFE_METHODS and not self.request.headers.get(REQUEST_HEADER):
            self.deny(403, f"A {self.request.method} request needs the {REQUEST_HEADER} header")

    def _login_or_refuse(self, token: str) -> None:
        """A GET with the right `?token=` gets the session cookie; anything else is a 401."""
        query_token = self.get_query_argument("token", None)
        if query_token is not None and self.request.method == "GET" and _same(query_token, token):
            self.set_cookie(
                SESSION_COOKIE,
                session_cookie_value(token),
                httponly=True,
                samesite="Strict",
                secure=self._over_https(),
                path="/",
            )
            # Drop the token from the address bar (and the browser history) at once.
            rest = {
                name: values[-1].decode()
                for name, values in self.request.query_arguments.items()
                if name != "token"
            }
            self.redirect(self.request.path + (f"?{urlencode(rest)}" if rest else ""))
            return
        self.set_header("WWW-Authenticate", 'Bearer realm="dagrun"')
        self.deny(401, "Unauthorized: send Authorization: Bearer <DAGRUN_SERVER_TOKEN>")

    def _over_https(self) -> bool:
        """Whether the browser reached us over HTTPS. A forged `X-Forwarded-Proto` can only
        make the cookie Secure, which harms no one but the forger."""
        forwarded = self.request.headers.get("X-Forwarded-Proto", "").partition(",")[0]
        return self.request.protocol == "https" or forwarded.strip().lower() == "https"

    def _authorized(self, token: str) -> bool:
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), token):
            return True
        cookie = self.get_cookie(SESSION_COOKIE)
        return cookie is not None and _same(cookie, session_cookie_value(token))

    def deny(self, status: int, message: str) -> None:
        """Finish the request with `status` and a one-line reason (JSON under /api/)."""
        self.set_status(status)
        if self.request.path.startswith("/api/"):
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"error": message}))
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(message + "\n")

    def set_default_headers(self) -> None:
        # The pages load nothing from elsewhere and are never framed.
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
