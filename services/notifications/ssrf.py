"""Where a webhook may be sent: the guard against making the CRM call into its own network (SSRF).

A webhook URL is https, at a name or address that resolves only to public addresses; private,
loopback, link-local (the cloud metadata service at 169.254.169.254 among them), multicast and
reserved addresses are refused, IPv4 and IPv6 alike (an IPv4-mapped IPv6 address is judged as the
IPv4 address it is). The name is resolved again at each send, and the connection is made to the
address that was checked, so a name that changes its answer in between (DNS rebinding) gains
nothing. Redirects are never followed.

NOTIFICATIONS_WEBHOOK_ALLOW lists `host:port` pairs exempt from all of this (plain http allowed),
for development and tests; it is empty in every deployment."""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}  # AWS (v4 and v6), Alibaba Cloud


class Refused(ValueError):
    """A webhook target the CRM will not call, and why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the TLS name and the Host header)
    port: int
    path: str  # path and query
    allow_listed: bool


def allow_list() -> frozenset[str]:
    raw = os.environ.get("NOTIFICATIONS_WEBHOOK_ALLOW", "")
    return frozenset(e.strip().lower() for e in raw.split(",") if e.strip())


def parse(url: str) -> Target:
    """The URL's parts, or Refused when it is not one the CRM will call (whatever it resolves to)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused("an https URL is needed")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not accepted; the signature authenticates the CRM")
    host = parts.hostname.lower()
    port = port or (443 if parts.scheme == "https" else 80)
    allowed = f"{host}:{port}" in allow_list()
    if parts.scheme == "http" and not allowed:
        raise Refused("an https URL is needed")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = Target(parts.scheme, host, port, path, allowed)
    if not allowed:
        literal = _literal(host)
        if literal is not None:
            check_address(literal)
    return target


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA or not address.is_global or address.is_multicast:
        raise Refused(f"{address} is not a public address")


def resolve(target: Target) -> str:
    """The address to connect to: the first the name resolves to, once every address it resolves to
    has been checked (a name with one private answer among public ones is refused)."""
    try:
        infos = socket.getaddrinfo(target.host.strip("[]"), target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"{target.host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise Refused(f"{target.host} does not resolve")
    if not target.allow_listed:
        for address in addresses:
            check_address(address)
    return str(addresses[0])
