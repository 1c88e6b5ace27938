"""The network edge, Sans-I/O: who the client is, which Host and Origin a request may carry.

A web page the user visits can reach a gateway on 127.0.0.1: its WebSocket and its form posts
go there, and DNS rebinding lets a page of `evil.example` read answers as if same-origin (its
name re-resolves to 127.0.0.1, the requests carry `Host: evil.example`). The Host check
refuses names the gateway does not answer to; the Origin check refuses cross-site WebSockets
(browsers do not apply CORS to them). These functions decide; gateway/app.py and
gateway/ws/handler.py answer.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

# Names a page cannot make its own: the loopback names, and any loopback address literal.
LOOPBACK_NAMES = frozenset({"localhost"})
# The spellings nearly every local request's Host has: known without parsing an address.
_LOOPBACK_LITERALS = frozenset({"127.0.0.1", "::1"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def unmapped(address: Address) -> Address:
    """An IPv4 client written by a dual-stack socket or proxy as `::ffff:a.b.c.d` is that
    IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# A host on IPv6 is routed a /64 and picks any address in it at will (privacy addresses,
# RFC 8981), so one client is one /64: counted per address, it could use a fresh one per try.
CLIENT_PREFIX_V6 = 64


def client_key(client: str) -> str:
    """What the failed-auth limiter and the pre-auth caps count a client address under: an
    IPv4 address (mapped or not) as itself, an IPv6 address as its /64."""
    address = parse_address(client)
    if address is None:
        return client
    address = unmapped(address)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, CLIENT_PREFIX_V6), strict=False))


def parse_network(text: str) -> Network | None:
    """An address or a CIDR (`10.0.0.0/8`, `::1`); None when it is neither."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=32)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    # Parsed once per config value: the list is read per request, and a reload swaps it.
    return tuple(n for n in (parse_network(e) for e in entries) if n is not None)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: tuple[str, ...]
) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
    address of X-Forwarded-For that is not a trusted proxy itself.

    Rightmost: every proxy appends the address it saw, and only the entries our own proxies
    appended are trustworthy; anything to their left the client may have written. Without a
    trusted peer the header is ignored, so a client cannot pose as loopback or dodge the
    limiter by sending one.
    """
    if not trusted or peer is None:
        return peer
    networks = _networks(trusted)
    if not _in(_hop_address(peer), networks):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _hop_address(hop)
        if address is None:
            # Garbage in the chain: what is left of it cannot be trusted either.
            break
        client = str(address)
        if not _in(address, networks):
            break
    return client


def _hop_address(text: str) -> Address | None:
    """An address as a proxy writes it: bare, `[v6]`, or with a port (`a.b.c.d:port`,
    `[v6]:port`: Azure's and some others' way); an IPv4 client that a dual-stack socket shows
    as `::ffff:a.b.c.d` as its IPv4 address, so that IPv4 proxy entries match it. Unparsed,
    a hop with a port made every client behind the proxy the proxy itself to the limiter."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest[:1] == ":" and _is_port(rest[1:]))):
            return None
        text = host
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    address = parse_address(text)
    return unmapped(address) if address is not None else None


def _in(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def split_host(value: str) -> str | None:
    """The host of a Host header (lowercase, no port, no trailing dot), None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
        return host if parse_address(host) is not None else None
    host, sep, port = value.partition(":")
    if sep and not _is_port(port):
        return None
    host = host.rstrip(".")
    if not host or not all(c.isalnum() or c in "-._" for c in host) or not host.isascii():
        return None
    return host


def _is_port(text: str) -> bool:
    """ASCII digits (RFC 3986 §3.2.3); `str.isdigit` also takes other scripts' digits and
    superscripts."""
    return text.isascii() and text.isdigit()


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES or host in _LOOPBACK_LITERALS:
        return True
    address = parse_address(host)
    return address is not None and address.is_loopback


def host_allowed(host: str, allowed: Iterable[str], own: Iterable[str]) -> bool:
    """`host` (from `split_host`): loopback, listed in `gateway.http.allowedHosts`, or one of
    the bind's own names and addresses."""
    return is_loopback_host(host) or host in allowed or host in own


@functools.lru_cache(maxsize=8)
def own_names(bind: str, custom_host: str | None) -> frozenset[str]:
    """The names a `lan` or `custom` bind answers to besides loopback and `allowedHosts`.

    custom: its address. lan: the machine's host name, its fully qualified name and the
    addresses they resolve to, as far as the standard library tells (it cannot list
    interfaces; the address a request arrived on is added per request). Looked up once.
    """
    if bind == "custom":
        return frozenset({custom_host.lower()}) if custom_host else frozenset()
    if bind != "lan":
        return frozenset()
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for name in list(names):
        try:
            for info in socket.getaddrinfo(name, None):
                names.add(str(info[4][0]).split("%", 1)[0].lower())
        except OSError:
            pass
    return frozenset(n for n in names if n)


def normalize_origin(text: str) -> str | None:
    """`scheme://host[:port]`, lowercase, the default port left out; None unless it is
    exactly an http(s) origin (no path, query, fragment or user info)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or not text.isascii():
        return None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


def origin_allowed(origin: str, scheme: str, host_header: str, allowed: Iterable[str]) -> bool:
    """A WebSocket upgrade's Origin: the gateway's own (same scheme, host and port as the
    request's Host) or one listed in `gateway.controlUi.allowedOrigins`. `null` (sandboxed
    frames, file: pages) is neither."""
    given = normalize_origin(origin)
    if given is None:
        return False
    if given in allowed:
        return True
    own = normalize_origin(f"{scheme}://{host_header.strip()}")
    return own is not None and given == own
