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
# IPv6 ranges Python calls global that reach IPv4 or private networks through a translator or tunnel.
_REFUSED_V6 = [ipaddress.ip_network(n) for n in (
    "::/96",  # IPv4-compatible
    "::ffff:0:0:0/96",  # SIIT
    "64:ff9b:1::/48",  # local-use NAT64
    "fec0::/10",  # site-local
    "2001::/32",  # Teredo
)]
_EMBEDDING_V4 = {ipaddress.ip_network("64:ff9b::/96"): lambda a: ipaddress.IPv4Address(int(a) & 0xFFFFFFFF),  # NAT64
                 ipaddress.ip_network("2002::/16"): lambda a: ipaddress.IPv4Address((int(a) >> 80) & 0xFFFFFFFF)}  # 6to4


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
    host = parts.hostname.lower().rstrip(".")
    if _literal(host) is None:
        try:  # labels of 1 to 63 characters, 253 in all (the codec refuses the rest)
            if len(host.encode("idna")) > 253:
                raise UnicodeError("too long")
        except UnicodeError:
            raise Refused(f"{host[:80]} is not a valid host name") from None
    if port == 0:
        raise Refused("port 0 is not a port")
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
    original = address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif any(address in net for net in _REFUSED_V6):
            raise Refused(f"{original} is not a public address")
        else:
            for net, embedded in _EMBEDDING_V4.items():
                if address in net:
                    address = embedded(address)  # judged as the IPv4 address it leads to
    if address in METADATA or not address.is_global or address.is_multicast:
        raise Refused(f"{original} is not a public address")


def resolve(target: Target) -> str:
    """The address to connect to: the first the name resolves to, once every address it resolves to
    has been checked (a name with one private answer among public ones is refused)."""
    try:
        infos = socket.getaddrinfo(target.host.strip("[]"), target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:  # a label too long or empty is a UnicodeError
        raise Refused(f"{target.host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise Refused(f"{target.host} does not resolve")
    if not target.allow_listed:
        for address in addresses:
            check_address(address)
    return str(addresses[0])


def host_of(url: str) -> str:
    """The host of a URL, for messages (the path and query of a webhook URL may be its secret)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
