"""Which `Host` headers name this server, and which `Origin`s may use it (the lists of --allowed-hosts and
--allowed-origins). Plain standard library: the CLI checks the options before anything web is imported.

A DNS-rebinding page reaches the server under a name its author controls (first pointing at their own
server, then at 127.0.0.1), and the browser sends that name as `Host`. So a Host passes when it is:
- a name in --allowed-hosts (`*` lets every Host through: behind a proxy that checks it);
- an IP address the server listens on: a loopback address when it listens on loopback, the address
  itself when it listens on one, any address when it listens on all of them (0.0.0.0 or ::): a
  browser that sends an address as Host has that address in its URL, and nobody can rebind that;
- `localhost` (or a name under `.localhost`, which browsers resolve themselves) when the server
  listens on loopback or on all addresses;
- the name given as --host.
With or without a port: the port is not what a rebinding attack changes.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable

from bigcode_cli.errors import UsageError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
ANY = "*"


def ip_of(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name spells (`[::1]` or `::1`, `127.0.0.1`), or None for a name."""
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    address = ip_of(host)
    return address is not None and address.is_loopback


def host_name(header: str) -> str:
    """The host of a Host header, lowercased, without its port, brackets or trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:  # name:port or v4:port (a bare v6 address has more colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _split(values: Iterable[str]) -> list[str]:
    """Option values, each possibly a comma-separated list, as one list without blanks."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def allowed_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """--allowed-hosts as host names (lowercased); a UsageError for a URL or a name with a path."""
    names = []
    for value in _split(values):
        if "/" in value or "@" in value:
            raise UsageError(f"--allowed-hosts takes host names such as devbox.lan, not URLs: got {value!r}")
        names.append(value if value == ANY else host_name(value))
    return tuple(names)


def allowed_origins(values: Iterable[str]) -> tuple[str, ...]:
    """--allowed-origins as origins (`scheme://host[:port]`, lowercased), `null` or `*`; a UsageError otherwise."""
    origins = []
    for value in _split(values):
        if value in (ANY, "null"):
            origins.append(value)
            continue
        parts = urllib.parse.urlsplit(value.lower())
        if not parts.scheme or not parts.netloc or parts.path.strip("/") or parts.query or parts.fragment:
            raise UsageError(f"--allowed-origins takes origins (scheme://host[:port], no path) such as "
                             f"http://localhost:3000: got {value!r}")
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(origins)


@dataclass(frozen=True)
class HostPolicy:
    """The Host headers a server bound to `host` (listening on `address`) answers; see the module docstring."""

    host: str = "127.0.0.1"  # as given to --host
    address: str = "127.0.0.1"  # the address the socket listens on
    allowed: tuple[str, ...] = field(default=())  # --allowed-hosts

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: HTTP/1.0 without one, not a browser) is for us."""
        if header is None or ANY in self.allowed:
            return True
        name = host_name(header)
        if name in self.allowed:
            return True
        listening = ip_of(self.address)
        everywhere = listening is not None and listening.is_unspecified
        loopback = is_loopback(self.host) or (listening is not None and listening.is_loopback)
        address = ip_of(name)
        if address is not None:
            return everywhere or address == listening or (loopback and address.is_loopback)
        if name in LOOPBACK_NAMES or name.endswith(".localhost"):
            return loopback or everywhere
        return ip_of(self.host) is None and name == host_name(self.host)
