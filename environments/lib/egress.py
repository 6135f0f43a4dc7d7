"""Outgoing HTTP that people configure (team webhooks) may only reach the internet.

An admin-set webhook URL must not turn the portal into a way into the cluster network,
the database or a cloud metadata service (169.254.169.254). So:

- ``Webhook.clean`` refuses URLs whose host is an internal IP literal or ``localhost``,
  with a message saying why;
- ``opener`` checks the address it actually connected to, after DNS, so a name that
  resolves (or re-resolves) to an internal address is refused too, and it never follows
  redirects.

Networks in ``settings.WEBHOOK_ALLOWED_NETWORKS`` are allowed, for a relay inside the VPC.
Webhooks connect directly: proxy environment variables are not used.
"""

from __future__ import annotations

import http.client
import ipaddress
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings

# IPv6 addresses that carry an IPv4 address a gateway or the host's stack will reach:
# NAT64 (RFC 6052), IPv4-compatible (::a.b.c.d, deprecated) and IPv4-mapped (::ffff:...).
# 6to4 (2002::/16) carries it in bits 16-48 (``sixtofour``).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refused_address(address: str) -> str | None:
    """Why outgoing webhooks may not connect to this IP address, or None if they may.

    An IPv6 address that embeds an IPv4 one is judged by the IPv4 address it reaches.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if any(ip.version == net.version and ip in net for net in settings.WEBHOOK_ALLOWED_NETWORKS):
        return None
    if ip.is_multicast or not ip.is_global:
        return f"{ip} is an internal address (set WEBHOOK_ALLOWED_NETWORKS to allow it)"
    return None


def refused_url(url: str) -> str | None:
    """Why a webhook URL is refused before any lookup, or None (the connect check follows)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        return "only http and https URLs are allowed"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host == "localhost" or host.endswith(".localhost"):
        return refused_address("127.0.0.1")
    try:
        return refused_address(host)
    except ValueError:
        return None  # a DNS name: checked when connecting


class _CheckedPeer:
    def connect(self):
        super().connect()
        reason = refused_address(self.sock.getpeername()[0])
        if reason:
            self.sock.close()
            raise OSError(f"refused: {reason}")


class _HTTPConnection(_CheckedPeer, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_CheckedPeer, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook goes where its admin pointed it: a redirect is a failed delivery."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirect to {newurl} refused", headers, fp
        )


opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), _HTTPHandler, _HTTPSHandler, _RefuseRedirects
)


def masked_url(url: str) -> str:
    """A webhook URL fit for logs and the audit log: scheme, host and port only.

    Slack's and most chat webhooks carry their credential in the path (and others in
    the query or the user part), so everything after the host becomes "…".
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    if parts.username or parts.password:
        rest = rest or "/…"
    return f"{parts.scheme}://{host}{port}{rest}"
