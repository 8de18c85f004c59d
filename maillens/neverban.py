"""Addresses no jail may ban, and why: the never-ban lists.

A ban list that locks out the server's own relay clients or an allowlisted
partner does more harm than the attacks it stops, so before any ban the
address is checked against, in this order:

1. ``loopback`` (default 127.0.0.0/8 and ::1);
2. the server's own addresses (``ignoreself``, from ``ip addr``);
3. ``ignoreip`` from the config;
4. Postfix's ``mynetworks`` (literal networks; tables and files are not read);
5. OK entries of ``check_client_access`` tables and ``postscreen_access_list``
   (hash-style tables looked up as smtpd does -- name, parent domains,
   address, parent networks -- and ``cidr:`` tables, first match wins).

``reason(ip, name)`` gives the first that applies, in words fit for a log
line, or None.  ``is_us(helo)`` tells whether a HELO names this server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from maillens.accessmap import AccessTable
    from maillens.bans import BanSettings
    from maillens.postconf import PostfixConfig

log = logging.getLogger("maillens.bans")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HASH_TYPES = {"hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash"}
_OK_ACTIONS = {"OK"}


def own_addresses() -> list[str]:
    """The addresses of this host's interfaces (``ip -j addr``), else of its name."""
    out: list[str] = []
    ip = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None)
    if ip:
        try:
            proc = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=10)
            for link in json.loads(proc.stdout or "[]"):
                for info in link.get("addr_info", ()):
                    if info.get("local"):
                        out.append(str(info["local"]))
        except (OSError, ValueError, subprocess.SubprocessError):
            out = []
    if not out:
        try:
            out = [str(ai[4][0]) for ai in socket.getaddrinfo(socket.gethostname(), None)]
        except OSError:
            out = []
    return sorted(set(out))


class _CidrTable:
    """A ``cidr:`` table: ``network action`` lines, the first matching network decides."""

    def __init__(self, source: str, entries: list[tuple[Network, str, int]]) -> None:
        self.source = source
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> "_CidrTable":
        entries: list[tuple[Network, str, int]] = []
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            if not value:
                key, _, value = line.partition("\t")
            try:
                net = ipaddress.ip_network(key.strip("[]").replace("]/", "/"), strict=False)
            except ValueError:
                continue
            entries.append((net, value.strip(), n))
        return cls(str(path), entries)

    def lookup(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[Network, str, int] | None:
        for net, value, n in self.entries:
            if addr.version == net.version and addr in net:
                return net, value, n
        return None


class NeverBan:
    """The never-ban lists, ready for look-ups (cached per address and name)."""

    def __init__(
        self,
        networks: Iterable[tuple[Network, str]] = (),
        tables: Iterable["AccessTable"] = (),
        cidr_tables: Iterable[_CidrTable] = (),
        our_names: Iterable[str] = (),
    ) -> None:
        self.networks = list(networks)
        self.tables = list(tables)
        self.cidr_tables = list(cidr_tables)
        self.our_names = {n.lower().removesuffix(".") for n in our_names if n}
        self._cache: dict[tuple[str, str | None], str | None] = {}

    # -- building ------------------------------------------------------------
    @classmethod
    def from_settings(
        cls,
        settings: "BanSettings",
        postfix_config: "PostfixConfig | None",
        *,
        own: Iterable[str] | None = None,
    ) -> "NeverBan":
        nets: list[tuple[Network, str]] = []
        for text in settings.loopback:
            nets.append((ipaddress.ip_network(text, strict=False), f"loopback ({text})"))
        mine = list(own) if own is not None else (own_addresses() if settings.ignoreself else [])
        for addr in mine:
            try:
                nets.append((ipaddress.ip_network(addr, strict=False), f"one of this server's addresses ({addr})"))
            except ValueError:
                continue
        for text in settings.ignoreip:
            nets.append((ipaddress.ip_network(text, strict=False), f"ignoreip {text} in [bans]"))
        tables: list[AccessTable] = []
        cidrs: list[_CidrTable] = []
        names: list[str] = ["localhost", "localhost.localdomain", socket.getfqdn()]
        names += list(mine)
        if postfix_config is not None:
            if settings.mynetworks:
                for net in postfix_config.mynetworks_networks():
                    nets.append((net, f"mynetworks {net} in {postfix_config.source}"))
            if settings.access_client:
                tables, cidrs = _access_tables(postfix_config)
            for param in ("myhostname", "mydomain"):
                value = postfix_config.parameter(param)
                if value:
                    names.append(value)
            names += [d for d in postfix_config.mydestination if not any(c in d for c in "$/:")]
        elif settings.mynetworks or settings.access_client:
            log.warning("no Postfix configuration to read: mynetworks and access.client OK entries are "
                        "not protected from bans; set [postfix] config_dir or install postconf")  # fmt: skip
        return cls(nets, tables, cidrs, names)

    # -- look-ups --------------------------------------------------------------
    def reason(self, ip: str, name: str | None = None) -> str | None:
        """Why ``ip`` (whose verified name is ``name``) must never be banned, or None."""
        key = (ip, name)
        if key in self._cache:
            return self._cache[key]
        result = self._reason(ip, name)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _reason(self, ip: str, name: str | None) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net, why in self.networks:
            if addr.version == net.version and addr in net:
                return why
        for table in self.tables:
            match = table.lookup_client(name if name and name != "unknown" else None, ip)
            if match is not None and match.action in _OK_ACTIONS:
                e = match.entry
                return f"allowed by {e.where} ({e.key} {e.value})"
        for cidr in self.cidr_tables:
            hit = cidr.lookup(addr)
            if hit is not None and hit[1].split()[0].upper() in ("OK", "PERMIT"):
                return f"allowed by {cidr.source} line {hit[2]} ({hit[0]} {hit[1]})"
        return None

    def overlap(self, prefix: str) -> str | None:
        """Why banning the whole ``prefix`` would hit a never-ban address, or None."""
        net = ipaddress.ip_network(prefix, strict=False)
        for other, why in self.networks:
            if other.version == net.version and net.overlaps(other):
                return why
        for cidr in self.cidr_tables:
            for other, value, n in cidr.entries:
                if other.version == net.version and net.overlaps(other) and value.split()[0].upper() in ("OK", "PERMIT"):
                    return f"{cidr.source} line {n} allows {other}"
        for table in self.tables:
            for entry in table:
                if entry.action not in _OK_ACTIONS:
                    continue
                key = _address_key(entry.key)
                if key is not None and key.version == net.version and net.overlaps(key):
                    return f"{entry.where} allows {entry.key}"
        return None

    def is_us(self, helo: Any) -> bool:
        """Whether a HELO/EHLO argument names this server (or a loopback name).

        Case does not matter; ``name.`` (one trailing dot) is ``name``, and an
        address literal ``[addr]`` or ``[IPv6:addr]`` is ``addr``.
        """
        if not helo:
            return False
        text = str(helo).lower()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
            if text.startswith("ipv6:"):
                text = text[5:]
        elif text.endswith("."):
            text = text[:-1]
        return text in self.our_names


def _address_key(key: str) -> Network | None:
    """An access-table address key (``1.2.3.4``, ``1.2.3``, ``2001:db8``) as a network."""
    parts = key.split(".")
    if all(p.isdigit() for p in parts) and 1 <= len(parts) <= 4:
        try:
            return ipaddress.ip_network(".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}")
        except ValueError:
            return None
    if ":" in key:
        groups = key.split(":")
        try:
            if len(groups) >= 8 or "" in groups:
                return ipaddress.ip_network(key)
            return ipaddress.ip_network(":".join(groups) + "::" + f"/{16 * len(groups)}")
        except ValueError:
            return None
    return None


def _access_tables(cfg: "PostfixConfig") -> tuple[list["AccessTable"], list[_CidrTable]]:
    """The client access tables Postfix consults, read from disk (missing ones logged)."""
    from maillens.accessmap import AccessTable
    from maillens.errors import InputError

    tables: list[AccessTable] = []
    cidrs: list[_CidrTable] = []
    seen: set[str] = set()
    for amap in cfg.access_maps():
        if amap.restriction not in ("check_client_access", "postscreen_access_list") or amap.spec in seen:
            continue
        seen.add(amap.spec)
        kind = amap.type if amap.type != "proxy" else amap.name.partition(":")[0]
        path = cfg.locate(amap.path) if amap.path else None
        if kind not in _HASH_TYPES and kind != "cidr":
            log.info("cannot read OK entries of %s (type %s); its clients are not protected from bans", amap.spec, kind)
            continue
        if path is None:
            log.warning("client access table %s not found; its OK entries are not protected from bans", amap.spec)
            continue
        try:
            if kind == "cidr":
                cidrs.append(_CidrTable.load(path))
            else:
                tables.append(AccessTable.load(path))
        except (OSError, InputError) as exc:
            log.warning("cannot read %s (%s); its OK entries are not protected from bans", path, exc)
    return tables, cidrs
