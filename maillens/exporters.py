"""Block lists in the forms firewalls and Postfix load, written atomically.

One ``BanEntry`` per banned address or prefix; each writer turns a list of
them into the text one loader reads in one go, so a loader never sees half a
list:

``nft``
    For ``nft -f``: declares table ``inet maillens`` with the sets
    ``blocked4``/``blocked6`` (``flags interval, timeout``) if they are
    missing, flushes them and adds every element with its remaining time as a
    per-element timeout, all in the one transaction ``nft -f`` makes of a
    file.  Permanent bans carry no timeout.  The rule that uses the sets is
    yours to add once (``NFT_RULE_SNIPPET``, also in the file's header).
``ipset``
    For ``ipset restore``: fills a temporary set and swaps it with the live
    one (``maillens4``/``maillens6``, ``hash:net`` with timeouts), so the live
    set changes in one step.
``iptables`` / ``ip6tables``
    For ``iptables-restore --noflush`` / ``ip6tables-restore --noflush``: the
    chain ``MAILLENS`` is declared (which empties it) and refilled; other
    chains are untouched.  Jump to it once from INPUT for ports 25/465/587.
``postfix-cidr``
    A ``cidr:`` table (``192.0.2.7 REJECT ...``) for ``check_client_access``
    or ``postscreen_access_list``; ``postfix reload`` rereads it.
``plain``
    One address or prefix per line.
``json``
    A list of objects: ``address``, ``jail``, ``failures``, ``first``,
    ``last``, ``until`` (ISO 8601 UTC; ``null`` = permanent), ``bans``,
    ``evidence``.

Example::

    text = render("nft", entries, now=time.time())
    write_atomic(Path("/etc/nftables.d/maillens.nft"), text)
    apply("nft", Path("/etc/nftables.d/maillens.nft"))   # runs nft -f
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from maillens.errors import InputError, MaillensError, UsageError

NFT_TABLE = "maillens"
NFT_SET4 = "blocked4"
NFT_SET6 = "blocked6"
IPSET4 = "maillens4"
IPSET6 = "maillens6"
IPTABLES_CHAIN = "MAILLENS"
#: ipset's largest timeout (seconds); longer bans are refreshed by the next run.
IPSET_MAX_TIMEOUT = 2147483
MAIL_PORTS = (25, 465, 587)

#: The rule that makes the nft sets do something; add it once (e.g. in
#: /etc/nftables.conf, which may flush the ruleset: so the sets are declared
#: here too, empty until the next ``maillens bans``).  ``drop`` can be
#: ``reject with tcp reset``.
NFT_RULE_SNIPPET = f"""\
table inet {NFT_TABLE} {{
    set {NFT_SET4} {{ type ipv4_addr; flags interval, timeout; }}
    set {NFT_SET6} {{ type ipv6_addr; flags interval, timeout; }}
    chain input {{
        type filter hook input priority filter - 5; policy accept;
        tcp dport {{ {", ".join(map(str, MAIL_PORTS))} }} ip saddr @{NFT_SET4} drop
        tcp dport {{ {", ".join(map(str, MAIL_PORTS))} }} ip6 saddr @{NFT_SET6} drop
    }}
}}
"""

#: The jump into the iptables chain; add it once.
IPTABLES_RULE_SNIPPET = (
    f"-A INPUT -p tcp -m multiport --dports {','.join(map(str, MAIL_PORTS))} -j {IPTABLES_CHAIN}"
)


@dataclass
class BanEntry:
    """One line of a block list: an address (or prefix) and why it is there."""

    address: str
    jail: str
    failures: int
    first: float
    last: float
    until: float | None  # None: permanent
    bans: int
    evidence: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # addresses an aggregated prefix stands for

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.address, strict=False)

    @property
    def version(self) -> int:
        return self.network.version

    def timeout(self, now: float) -> int | None:
        """Whole seconds left (at least 1), None when permanent."""
        if self.until is None:
            return None
        return max(1, math.ceil(self.until - now))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address,
            "jail": self.jail,
            "failures": self.failures,
            "first": iso(self.first),
            "last": iso(self.last),
            "until": None if self.until is None else iso(self.until),
            "bans": self.bans,
            "evidence": list(self.evidence),
        }
        if self.members:
            out["members"] = list(self.members)
        return out


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _element(entry: BanEntry) -> str:
    """The address as loaders want it: host addresses bare, networks with a prefix."""
    net = entry.network
    if net.num_addresses == 1:
        return str(net.network_address)
    return str(net)


def prepare(entries: Iterable[BanEntry], now: float) -> list[BanEntry]:
    """Live entries, one per element, none inside another (interval sets refuse overlaps).

    An address listed by two jails appears once, with the later end; an
    address inside a listed prefix is left out (the prefix covers it).
    """
    best: dict[str, BanEntry] = {}
    for e in entries:
        if e.until is not None and e.until <= now:
            continue
        key = str(e.network)
        old = best.get(key)
        if old is None or _later(e.until, old.until):
            best[key] = e
    nets = sorted(best.values(), key=lambda e: (e.version, e.network.prefixlen))
    kept: list[BanEntry] = []
    wide: dict[int, list[Any]] = {4: [], 6: []}
    for e in nets:
        net = e.network
        if any(net.subnet_of(w) for w in wide[e.version]):
            continue
        kept.append(e)
        if net.num_addresses > 1:
            wide[e.version].append(net)
    kept.sort(key=lambda e: (e.version, int(e.network.network_address), e.network.prefixlen))
    return kept


def _later(a: float | None, b: float | None) -> bool:
    if a is None:
        return b is not None
    return b is not None and a > b


def _header(fmt: str, entries: Sequence[BanEntry], now: float) -> list[str]:
    return [
        f"# maillens block list ({fmt}), {len(entries)} entries, as of {iso(now)}",
        "# Generated by 'maillens bans'; edits are lost at the next run.",
    ]


def render_nft(entries: Sequence[BanEntry], now: float) -> str:
    lines = _header("nft", entries, now)
    lines.append("# Load with: nft -f THIS_FILE   (one transaction: the sets are replaced atomically)")
    lines.append("# The sets do nothing until a rule uses them; add once, e.g. in /etc/nftables.conf:")
    lines += ["#   " + s for s in NFT_RULE_SNIPPET.splitlines()]
    decl = {4: "type ipv4_addr; flags interval, timeout;", 6: "type ipv6_addr; flags interval, timeout;"}
    names = {4: NFT_SET4, 6: NFT_SET6}
    lines.append(f"table inet {NFT_TABLE} {{")
    for v in (4, 6):
        lines.append(f"    set {names[v]} {{ {decl[v]} }}")
    lines.append("}")
    for v in (4, 6):
        lines.append(f"flush set inet {NFT_TABLE} {names[v]}")
    for v in (4, 6):
        elems = []
        for e in entries:
            if e.version != v:
                continue
            t = e.timeout(now)
            elems.append(_element(e) + ("" if t is None else f" timeout {t}s"))
        if not elems:
            continue
        lines.append(f"table inet {NFT_TABLE} {{")
        lines.append(f"    set {names[v]} {{")
        lines.append(f"        {decl[v]}")
        lines.append("        elements = {")
        lines += [f"            {el}," for el in elems]
        lines.append("        }")
        lines.append("    }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def render_ipset(entries: Sequence[BanEntry], now: float) -> str:
    lines = _header("ipset", entries, now)
    lines.append("# Load with: ipset restore -file THIS_FILE  (fills a temporary set, then swaps it in)")
    lines.append(f"# Use with: iptables -I INPUT -p tcp -m multiport --dports 25,465,587 "
                 f"-m set --match-set {IPSET4} src -j DROP (and ip6tables with {IPSET6})")  # fmt: skip
    for v, name, family in ((4, IPSET4, "inet"), (6, IPSET6, "inet6")):
        mine = [e for e in entries if e.version == v]
        maxelem = max(65536, 2 * len(mine))
        opts = f"hash:net family {family} hashsize 1024 maxelem {maxelem} timeout 0"
        tmp = f"{name}-tmp"
        lines.append(f"create {name} {opts} -exist")
        lines.append(f"create {tmp} {opts} -exist")
        lines.append(f"flush {tmp}")
        for e in mine:
            t = e.timeout(now)
            t = 0 if t is None else min(t, IPSET_MAX_TIMEOUT)
            lines.append(f"add {tmp} {_element(e)} timeout {t} -exist")
        lines.append(f"swap {tmp} {name}")
        lines.append(f"destroy {tmp}")
    return "\n".join(lines) + "\n"


def _render_iptables(entries: Sequence[BanEntry], now: float, version: int) -> str:
    tool = "iptables" if version == 4 else "ip6tables"
    mine = [e for e in entries if e.version == version]
    lines = _header(tool, mine, now)
    if len(mine) < len(entries):
        lines.append(f"# {len(entries) - len(mine)} IPv{10 - version} entries are not in this file: "
                     f"write them with --format {OTHER_FAMILY[tool]}")
    lines.append(f"# Load with: {tool}-restore --noflush THIS_FILE  (only chain {IPTABLES_CHAIN} is replaced)")
    lines.append(f"# Jump to it once: {tool} {IPTABLES_RULE_SNIPPET}")
    lines.append("# iptables has no per-rule timeouts: run 'maillens bans' again to drop expired bans.")
    lines.append("*filter")
    lines.append(f":{IPTABLES_CHAIN} - [0:0]")
    for e in mine:
        lines.append(f"-A {IPTABLES_CHAIN} -s {e.network} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_iptables(entries: Sequence[BanEntry], now: float) -> str:
    return _render_iptables(entries, now, 4)


def render_ip6tables(entries: Sequence[BanEntry], now: float) -> str:
    return _render_iptables(entries, now, 6)


def _cidr_reason(e: BanEntry) -> str:
    until = "permanently" if e.until is None else "until " + iso(e.until)
    text = f"maillens: banned by {e.jail} {until}"
    return "".join(ch if ch.isprintable() else " " for ch in text)


def render_postfix_cidr(entries: Sequence[BanEntry], now: float) -> str:
    lines = _header("postfix-cidr", entries, now)
    lines.append("# Use as: check_client_access cidr:/path/to/THIS_FILE  (or postscreen_access_list);")
    lines.append("# Postfix reads cidr tables at start: 'postfix reload' after each write.")
    for e in entries:
        lines.append(f"{e.network}\tREJECT {_cidr_reason(e)}")
    return "\n".join(lines) + "\n"


def render_plain(entries: Sequence[BanEntry], now: float) -> str:
    return "".join(_element(e) + "\n" for e in entries)


def render_json(entries: Sequence[BanEntry], now: float) -> str:
    return json.dumps([e.to_json() for e in entries], indent=2, ensure_ascii=False) + "\n"


RENDERERS: dict[str, Callable[[Sequence[BanEntry], float], str]] = {
    "nft": render_nft,
    "ipset": render_ipset,
    "iptables": render_iptables,
    "ip6tables": render_ip6tables,
    "postfix-cidr": render_postfix_cidr,
    "plain": render_plain,
    "json": render_json,
}
FORMATS = tuple(RENDERERS)


def render(fmt: str, entries: Iterable[BanEntry], now: float) -> str:
    """The block list ``entries`` as ``fmt`` at time ``now`` (expired entries left out)."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise UsageError(f"unknown block list format {fmt!r}; use one of: {', '.join(FORMATS)}") from None
    return renderer(prepare(entries, now), now)


#: The formats that take one address family, and the one that writes the other.
OTHER_FAMILY = {"iptables": "ip6tables", "ip6tables": "iptables"}


def written_entries(fmt: str, entries: Iterable[BanEntry], now: float) -> tuple[int, int]:
    """(entries ``fmt`` writes, entries of the other address family it leaves out).

    ``iptables`` and ``ip6tables`` each take one family (``OTHER_FAMILY``); every other format takes both.
    """
    listed = prepare(entries, now)
    family = {"iptables": 4, "ip6tables": 6}.get(fmt)
    if family is None:
        return len(listed), 0
    mine = sum(1 for e in listed if e.version == family)
    return mine, len(listed) - mine


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a part.

    The new file gets ``mode``, else the permissions (and, as root, the owner
    and group) of the file it replaces -- an admin's ``chmod 640``/``chgrp adm``
    on a report stays -- else 0644.

    The new file is renamed over the old one -- but only a regular file may be:
    renaming over ``/dev/null``, ``/dev/stdout`` or a FIFO a loader reads would
    replace the device node or pipe itself (as root, /dev/null becomes a file and
    the whole machine's output piles up in it).  Those are written in place.  A
    symlink stays a symlink: the file it points at is the one replaced.
    """
    path = Path(path)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise InputError(f"cannot write {path}: it is a directory; give a file name")
    if found is not None and not stat.S_ISREG(found.st_mode):
        _write_in_place(path, text)
        return
    if mode is None:
        mode = stat.S_IMODE(found.st_mode) if found is not None else 0o644
    path = Path(os.path.realpath(path))
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; check that {directory} exists and is writable") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if found is not None and os.geteuid() == 0 and (found.st_uid, found.st_gid) != (0, 0):
            os.chown(tmp, found.st_uid, found.st_gid)  # a 0640 root:adm report stays readable by adm
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_in_place(path: Path, text: str) -> None:
    """A device, FIFO or socket: written through, as ``>`` in a shell would."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None


#: How ``--apply`` loads each format (``{path}`` is the written file).
LOADERS: dict[str, tuple[str, ...]] = {
    "nft": ("nft", "-f", "{path}"),
    "ipset": ("ipset", "restore", "-file", "{path}"),
    "iptables": ("iptables-restore", "--noflush", "{path}"),
    "ip6tables": ("ip6tables-restore", "--noflush", "{path}"),
    "postfix-cidr": ("postfix", "reload"),
}


#: Where the loaders live when PATH lacks the sbin directories (cron's PATH is /usr/bin:/bin).
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def _loader_binary(name: str) -> str:
    """``name`` when it is on PATH, else its full path in an sbin directory (else ``name``, to fail)."""
    if shutil.which(name):
        return name
    for directory in SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return name


class ApplyError(MaillensError):
    """The loader ran and failed; the message carries its exit status and output."""


@dataclass
class ApplyResult:
    command: list[str]
    returncode: int
    output: str


def apply(fmt: str, path: Path, *, runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> ApplyResult:
    """Run the loader for ``fmt`` on ``path``; raise ApplyError unless it exits 0."""
    if fmt not in LOADERS:
        raise UsageError(f"--apply has no loader for format {fmt!r}; it works with {', '.join(LOADERS)}")
    cmd = [part.format(path=str(path)) for part in LOADERS[fmt]]
    cmd[0] = _loader_binary(cmd[0])
    try:
        proc = runner(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ApplyError(f"--apply: {cmd[0]} is not installed (needed to load the {fmt} list)") from None
    except subprocess.TimeoutExpired:
        raise ApplyError(f"--apply: '{' '.join(cmd)}' did not finish within 120 s") from None
    output = ((proc.stdout or "") + (proc.stderr or "")).strip()
    if proc.returncode != 0:
        detail = f": {output.splitlines()[0]}" if output else ""
        raise ApplyError(f"--apply: '{' '.join(cmd)}' failed with exit status {proc.returncode}{detail}")
    return ApplyResult(cmd, proc.returncode, output)
