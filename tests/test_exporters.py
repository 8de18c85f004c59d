"""Block-list outputs, checked by the tools that load them.

nft, ipset and iptables files are loaded for real, twice (to show that a
second load *replaces* the first), inside a private network namespace the
test creates with ``unshare -n`` so the host's firewall is never touched;
``nft -c -f`` is also run on the host, and if netlink is refused there the
test says so and relies on the namespace check.  The cidr table is queried
with ``postmap -q``.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest

from conftest import IN_CI, require_tool
from maillens.errors import UsageError
from maillens.exporters import (
    IPSET4,
    IPSET6,
    IPSET_MAX_TIMEOUT,
    NFT_RULE_SNIPPET,
    ApplyError,
    BanEntry,
    apply,
    prepare,
    render,
    write_atomic,
    written_entries,
)

NOW = 1_794_300_000.0


def _entries() -> list[BanEntry]:
    return [
        BanEntry("192.0.2.7", "sasl", 5, NOW - 300, NOW - 10, NOW + 3600, 1, ["line a"]),
        BanEntry("2001:db8::5", "rbl", 3, NOW - 100, NOW - 5, NOW + 600, 2, ["line b"]),
        BanEntry("198.51.100.0/24", "rbl", 9, NOW - 900, NOW - 1, None, 3, ["line c"]),
        BanEntry("198.51.100.77", "sasl", 5, NOW - 50, NOW - 2, NOW + 60, 1, []),  # inside the /24: left out
        BanEntry("2001:db8:1::/64", "pregreet", 4, NOW - 10, NOW - 3, NOW + 7200, 1, []),
        BanEntry("203.0.113.9", "dictionary", 10, NOW - 999, NOW - 900, NOW - 1, 1, []),  # expired
        BanEntry("192.0.2.7", "rbl", 3, NOW - 200, NOW - 20, NOW + 7200, 1, ["line d"]),  # later end wins
        BanEntry("192.0.2.99", "sasl", 5, NOW - 20, NOW - 9, NOW + 10**7, 4, []),  # longer than ipset allows
    ]


EXPECTED = {  # address -> seconds left at NOW (None: permanent)
    "192.0.2.7": 7200,
    "192.0.2.99": 10**7,
    "198.51.100.0/24": None,
    "2001:db8::5": 600,
    "2001:db8:1::/64": 7200,
}


def test_prepare_dedupes_overlaps_and_expired() -> None:
    kept = prepare(_entries(), NOW)
    assert {e.address: e.timeout(NOW) for e in kept} == EXPECTED
    assert [e.jail for e in kept if e.address == "192.0.2.7"] == ["rbl"]


def test_json_and_plain() -> None:
    data = json.loads(render("json", _entries(), NOW))
    assert [d["address"] for d in data] == ["192.0.2.7", "192.0.2.99", "198.51.100.0/24", "2001:db8::5", "2001:db8:1::/64"]
    first = data[0]
    assert set(first) == {"address", "jail", "failures", "first", "last", "until", "bans", "evidence"}
    assert first == {
        "address": "192.0.2.7", "jail": "rbl", "failures": 3, "first": "2026-11-10T08:36:40+00:00",
        "last": "2026-11-10T08:39:40+00:00", "until": "2026-11-10T10:40:00+00:00", "bans": 1, "evidence": ["line d"],
    }  # fmt: skip
    assert data[2]["until"] is None
    assert render("plain", _entries(), NOW).splitlines() == [d["address"] for d in data]


def test_unknown_format() -> None:
    with pytest.raises(UsageError, match="unknown block list format 'pf'"):
        render("pf", [], NOW)


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "list.nft"
    target.write_text("old\n")
    write_atomic(target, "new\n", mode=0o640)
    assert target.read_text() == "new\n"
    assert (target.stat().st_mode & 0o777) == 0o640
    write_atomic(target, "newer\n")  # the replaced file's permissions stay
    assert (target.stat().st_mode & 0o777) == 0o640 and target.read_text() == "newer\n"
    if os.geteuid() == 0:  # as root, the replaced file's owner and group stay too (a 0640 root:adm report)
        os.chown(target, 1234, 4321)
        write_atomic(target, "again\n")
        assert (target.stat().st_uid, target.stat().st_gid) == (1234, 4321)
    write_atomic(tmp_path / "fresh.nft", "x\n")
    assert ((tmp_path / "fresh.nft").stat().st_mode & 0o777) == 0o644
    (tmp_path / "fresh.nft").unlink()
    assert [p.name for p in tmp_path.iterdir()] == ["list.nft"]
    from maillens.errors import InputError

    with pytest.raises(InputError, match="exists and is writable"):
        write_atomic(tmp_path / "missing-dir" / "x", "y")
    with pytest.raises(InputError, match="is a directory"):
        write_atomic(tmp_path, "y")


def test_write_atomic_keeps_pipes_and_symlinks(tmp_path: Path) -> None:
    """``--output`` naming a FIFO (or /dev/null, /dev/stdout) writes through it; renaming
    a temporary file over it would replace the pipe or device node with a plain file."""
    import stat
    import threading

    fifo = tmp_path / "loader.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_atomic(fifo, "table inet maillens {}\n")
    reader.join(timeout=10)
    assert got == ["table inet maillens {}\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    real = tmp_path / "lists" / "maillens.nft"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "maillens.nft"
    link.symlink_to(real)
    write_atomic(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["maillens.nft"]


# --------------------------------------------------------------------------- namespaces


def _netns_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def require_netns() -> None:
    """Loading firewall rules needs a private network namespace (root / CAP_SYS_ADMIN)."""
    require_tool("unshare")
    if _netns_ok():
        return
    msg = "cannot create a network namespace (unshare -n): firewall loading cannot be checked here"
    if IN_CI:
        pytest.fail(msg + " (CI=true: the runner must allow CAP_SYS_ADMIN)")
    pytest.skip(msg)


def in_netns(script: str) -> str:
    """Run a shell script in a fresh network namespace; its stdout."""
    proc = subprocess.run(["unshare", "-n", "sh", "-ec", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"namespace script failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _nft_elements(listing: str, set_name: str) -> dict[str, int | None]:
    """``nft -j list set`` output → element -> timeout seconds (None: none)."""
    data = json.loads(listing)
    out: dict[str, int | None] = {}
    for item in data["nftables"]:
        s = item.get("set")
        if not s or s["name"] != set_name:
            continue
        for el in s.get("elem", []):
            timeout = None
            if isinstance(el, dict) and "elem" in el:
                timeout = el["elem"].get("timeout")
                el = el["elem"]["val"]
            if isinstance(el, dict) and "prefix" in el:
                el = f"{el['prefix']['addr']}/{el['prefix']['len']}"
            out[str(el)] = timeout
    return out


# --------------------------------------------------------------------------- nft


def test_nft_check_on_host(tmp_path: Path) -> None:
    nft = require_tool("nft")
    path = tmp_path / "maillens.nft"
    write_atomic(path, render("nft", _entries(), NOW))
    proc = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        warnings.warn("nft -c -f: netlink refused on the host; syntax and semantics are checked in the "
                      "namespace test (test_nft_loads_and_replaces_in_namespace) instead")  # fmt: skip
        require_netns()
        in_netns(f"{nft} -c -f {path}")
        return
    assert proc.returncode == 0, proc.stderr


def test_nft_loads_and_replaces_in_namespace(tmp_path: Path) -> None:
    nft = require_tool("nft")
    require_netns()
    first = tmp_path / "first.nft"
    second = tmp_path / "second.nft"
    rules = tmp_path / "rules.nft"
    write_atomic(first, render("nft", _entries(), NOW))
    later = [BanEntry("203.0.113.50", "sasl", 5, NOW, NOW, NOW + 100, 1, []),
             BanEntry("2001:db8::9", "sasl", 5, NOW, NOW, None, 1, [])]  # fmt: skip
    write_atomic(second, render("nft", later, NOW))
    rules.write_text(NFT_RULE_SNIPPET)
    out = in_netns(
        f"{nft} -f {rules}; {nft} -f {first}; {nft} -f {rules}; {nft} -j list set inet maillens blocked4; echo ===; "
        f"{nft} -j list set inet maillens blocked6; echo ===; {nft} -f {second}; "
        f"{nft} -j list set inet maillens blocked4; echo ===; {nft} -j list set inet maillens blocked6; echo ===; "
        f"{nft} -j list chain inet maillens input"
    )
    v4, v6, v4b, v6b, chain = out.split("===\n")
    # per-element timeouts as written (the kernel reports the timeout, not what is left)
    assert _nft_elements(v4, "blocked4") == {"192.0.2.7": 7200, "192.0.2.99": 10**7, "198.51.100.0/24": None}
    assert _nft_elements(v6, "blocked6") == {"2001:db8::5": 600, "2001:db8:1::/64": 7200}
    # the second load replaced the sets, it did not add to them
    assert _nft_elements(v4b, "blocked4") == {"203.0.113.50": 100}
    assert _nft_elements(v6b, "blocked6") == {"2001:db8::9": None}
    assert "@blocked4" in chain and "@blocked6" in chain  # the documented rule loads against the sets


# --------------------------------------------------------------------------- ipset


def test_ipset_restore_swaps_in_namespace(tmp_path: Path) -> None:
    ipset = require_tool("ipset")
    require_netns()
    first = tmp_path / "a.ipset"
    second = tmp_path / "b.ipset"
    write_atomic(first, render("ipset", _entries(), NOW))
    write_atomic(second, render("ipset", [BanEntry("203.0.113.50", "sasl", 5, NOW, NOW, NOW + 100, 1, [])], NOW))
    out = in_netns(
        f"{ipset} restore -file {first}; {ipset} save {IPSET4}; {ipset} save {IPSET6}; echo ===; "
        f"{ipset} restore -file {second}; {ipset} save {IPSET4}; {ipset} save {IPSET6}; echo ===; "
        f"{ipset} list -n"
    )
    before, after, names = out.split("===\n")

    def members(text: str) -> dict[str, int]:
        got = {}
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["add"]:
                got[parts[2]] = int(parts[parts.index("timeout") + 1])
        return got

    got = members(before)
    assert set(got) == {"192.0.2.7", "192.0.2.99", "198.51.100.0/24", "2001:db8::5", "2001:db8:1::/64"}
    assert got["198.51.100.0/24"] == 0  # permanent
    assert 7190 <= got["192.0.2.7"] <= 7200  # ipset reports what is left
    assert IPSET_MAX_TIMEOUT - 10 <= got["192.0.2.99"] <= IPSET_MAX_TIMEOUT  # clamped to ipset's maximum
    assert set(members(after)) == {"203.0.113.50"}
    assert sorted(names.split()) == [IPSET4, IPSET6]  # the temporary sets are gone


# --------------------------------------------------------------------------- iptables


@pytest.mark.parametrize("fmt,tool,listing", [
    ("iptables", "iptables-restore", "iptables"),
    ("ip6tables", "ip6tables-restore", "ip6tables"),
])  # fmt: skip
def test_iptables_noflush_replaces_only_its_chain(tmp_path: Path, fmt: str, tool: str, listing: str) -> None:
    restore = require_tool(tool)
    lister = require_tool(listing)
    require_netns()
    first = tmp_path / "a.rules"
    second = tmp_path / "b.rules"
    write_atomic(first, render(fmt, _entries(), NOW))
    later = [BanEntry("203.0.113.50", "s", 1, NOW, NOW, NOW + 9, 1, []), BanEntry("2001:db8::9", "s", 1, NOW, NOW, None, 1, [])]
    write_atomic(second, render(fmt, later, NOW))
    out = in_netns(
        f"{lister} -A INPUT -p tcp --dport 22 -j ACCEPT; "
        f"{restore} --noflush {first}; {lister} -S MAILLENS; echo ===; "
        f"{restore} --noflush {second}; {lister} -S MAILLENS; echo ===; {lister} -S INPUT"
    )
    a, b, inp = out.split("===\n")
    if fmt == "iptables":
        assert a.splitlines() == ["-N MAILLENS", "-A MAILLENS -s 192.0.2.7/32 -j DROP",
                                  "-A MAILLENS -s 192.0.2.99/32 -j DROP", "-A MAILLENS -s 198.51.100.0/24 -j DROP"]  # fmt: skip
        assert b.splitlines() == ["-N MAILLENS", "-A MAILLENS -s 203.0.113.50/32 -j DROP"]
    else:
        assert a.splitlines() == ["-N MAILLENS", "-A MAILLENS -s 2001:db8::5/128 -j DROP",
                                  "-A MAILLENS -s 2001:db8:1::/64 -j DROP"]  # fmt: skip
        assert b.splitlines() == ["-N MAILLENS", "-A MAILLENS -s 2001:db8::9/128 -j DROP"]
    assert "--dport 22 -j ACCEPT" in inp  # --noflush: other chains untouched
    # the count says what the tool loaded, and the other family is named, not silently dropped
    text, rules = render(fmt, _entries(), NOW), len(a.splitlines()) - 1
    assert f"({fmt}), {rules} entries, as of" in text.splitlines()[0]
    written, left_out = written_entries(fmt, _entries(), NOW)
    assert written == rules and left_out == len(prepare(_entries(), NOW)) - rules > 0
    other = "ip6tables" if fmt == "iptables" else "iptables"
    assert f"# {left_out} IPv{6 if fmt == 'iptables' else 4} entries are not in this file: " \
           f"write them with --format {other}" in text.splitlines()


# --------------------------------------------------------------------------- postfix cidr


def test_postfix_cidr_with_postmap(tmp_path: Path) -> None:
    postmap = require_tool("postmap")
    path = tmp_path / "bans.cidr"
    write_atomic(path, render("postfix-cidr", _entries(), NOW))

    def q(addr: str) -> str | None:
        p = subprocess.run([postmap, "-q", addr, f"cidr:{path}"], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    assert q("192.0.2.7") == "REJECT maillens: banned by rbl until 2026-11-10T10:40:00+00:00"
    assert q("198.51.100.200") == "REJECT maillens: banned by rbl permanently"
    assert q("2001:db8::5").startswith("REJECT maillens: banned by rbl")
    assert q("2001:db8:1::abcd").startswith("REJECT maillens: banned by pregreet")
    assert q("203.0.113.9") is None  # expired
    assert q("192.0.2.8") is None


# --------------------------------------------------------------------------- apply


def _in_namespace(cmd: list[str], **kw):  # type: ignore[no-untyped-def]
    return subprocess.run(["unshare", "-n", *cmd], **kw)


def test_apply_runs_the_loader_and_reports_status(tmp_path: Path) -> None:
    require_tool("nft")
    require_netns()
    good = tmp_path / "good.nft"
    write_atomic(good, render("nft", _entries(), NOW))
    result = apply("nft", good, runner=_in_namespace)
    assert result.returncode == 0 and result.command == ["nft", "-f", str(good)]
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet maillens { set x { type nonsense; } }\n")
    with pytest.raises(ApplyError, match=r"'nft -f .*bad.nft' failed with exit status 1: .*nonsense"):
        apply("nft", bad, runner=_in_namespace)


def test_apply_finds_loaders_outside_crons_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cron runs jobs with PATH=/usr/bin:/bin; nft, ipset and iptables-restore live in /usr/sbin."""
    nft = require_tool("nft")
    require_netns()
    assert os.path.dirname(nft) in ("/usr/sbin", "/sbin", "/usr/local/sbin")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    good = tmp_path / "good.nft"
    write_atomic(good, render("nft", _entries(), NOW))
    result = apply("nft", good, runner=_in_namespace)
    assert result.returncode == 0
    assert os.path.dirname(result.command[0]) in ("/usr/sbin", "/sbin", "/usr/local/sbin")
    assert os.path.basename(result.command[0]) == "nft"


def test_apply_postfix_reload_failure_is_reported(tmp_path: Path) -> None:
    require_tool("postfix")
    path = tmp_path / "x.cidr"
    write_atomic(path, render("postfix-cidr", _entries(), NOW))
    running = subprocess.run(["postfix", "status"], capture_output=True).returncode == 0
    if running:
        pytest.skip("a Postfix is running here; reloading it from a test is not acceptable")
    with pytest.raises(ApplyError, match=r"'postfix reload' failed with exit status \d+"):
        apply("postfix-cidr", path)


def test_apply_refuses_formats_without_loader(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--apply has no loader for format 'json'"):
        apply("json", tmp_path / "x")


def test_no_root_no_problem_for_plain_outputs(tmp_path: Path) -> None:
    # the writers themselves need nothing: only loading does
    for fmt in ("json", "plain", "postfix-cidr", "nft", "ipset", "iptables", "ip6tables"):
        write_atomic(tmp_path / fmt, render(fmt, _entries(), NOW))
        assert (tmp_path / fmt).stat().st_size > 0
    assert os.listdir(tmp_path)
