"""Where a webhook may be sent: http(s) URLs only, and (unless allowed) never to a loopback,
private, link-local or otherwise internal address — checked on the addresses the name resolves
to at send time, and the request pinned to the address checked (no second lookup that DNS
rebinding could answer differently)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from worker.errors import WebhookError


class TargetRefused(Exception):
    """A delivery target that may not be reached; permanent for the delivery."""


class InternalTarget(TargetRefused):
    """A target resolving to a loopback, private, link-local or otherwise internal address."""


def check_url(url: str) -> str:
    """The URL if an endpoint may be registered with it (scheme and host); else WebhookError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(
            f"webhook URL must be an http:// or https:// URL with a host, got {url!r}"
        )
    if parts.username or parts.password:
        raise WebhookError("webhook URL must not carry a user or password")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise WebhookError(f"webhook URL has a bad port: {url!r}") from None
    return url.strip()


@dataclass(frozen=True)
class Target:
    """A request's URL with the host replaced by the checked address, the Host header, and the
    name TLS must verify (None for http)."""

    url: str
    host: str
    sni: str | None


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def resolve(url: str, *, allow_private: bool) -> Target:
    """Resolve the URL's host now and pin the request to its first address; TargetRefused if
    the name does not resolve or (unless ``allow_private``) any address is internal."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    if not allow_private:
        internal = [str(a) for a in addresses if _internal(a)]
        if internal:
            raise InternalTarget(
                f"{host} resolves to an internal address ({internal[0]}); "
                "set SIGNQ_WEBHOOKS_ALLOW_PRIVATE=1 to allow it"
            )
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    named = f"[{host}]" if ":" in host else host
    host_header = f"{named}:{parts.port}" if parts.port else named
    return Target(
        urlunsplit(parts._replace(netloc=netloc)),
        host_header,
        host if parts.scheme == "https" else None,
    )
