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


def refused_address(address: str) -> str | None:
    """Why outgoing webhooks may not connect to this IP address, or None if they may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
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
