"""maillens jails against the real fail2ban.

Two oracles:

* ``fail2ban-server -f`` itself, in the foreground with a private config
  directory, socket and database, a jail on ``postfix[mode=aggressive]`` and
  an action that appends every ban to a file, reading a corpus log whose time
  stamps were rewritten to now (fail2ban judges a log by the wall clock).
  maillens runs the same jail on the same file; banned addresses, ban counts
  and failure totals must be identical.
* fail2ban's own classes (Filter, FailManager, BanManager, observer,
  database), driven line by line on *log* time by ``tests/fail2ban_replay.py``
  under fail2ban's interpreter: this is where rate-scaled tickets, the
  service task, ``bantime.increment`` (formula, multipliers, maxtime,
  overalljails) and permanent bans are exercised on whole corpora, and every
  ban must agree in address, time, ban count, ban time and failures.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import corpus_dir, require_tool
from maillens.banconfig import BanSettings
from maillens.bans import BanEngine
from maillens.neverban import NeverBan

pytestmark = pytest.mark.oracle

HERE = Path(__file__).resolve().parent
AGGRESSIVE = "/etc/fail2ban/filter.d/postfix.conf[mode=aggressive]"


def fail2ban_python() -> str:
    """The interpreter fail2ban is installed for (from fail2ban-server's #! line)."""
    server = require_tool("fail2ban-server")
    first = Path(server).read_text(errors="replace").splitlines()[0]
    assert first.startswith("#!"), f"{server} is not a script"
    return first[2:].strip().split()[0]


def write_f2b_config(confdir: Path, jails: dict[str, dict[str, Any]], *, logpath: Path, record: Path | None = None) -> None:
    """A private fail2ban configuration directory: fail2ban.conf, jail.conf, filters, record action."""
    confdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/fail2ban/filter.d", confdir / "filter.d", dirs_exist_ok=True)
    (confdir / "action.d").mkdir(exist_ok=True)
    (confdir / "fail2ban.conf").write_text(
        "[Definition]\nloglevel = INFO\n"
        f"logtarget = {confdir / 'fail2ban.log'}\nsocket = {confdir / 'fail2ban.sock'}\n"
        f"pidfile = {confdir / 'fail2ban.pid'}\ndbfile = {confdir / 'fail2ban.sqlite3'}\n"
        "dbpurgeage = 3650d\n"
    )
    if record is not None:
        (confdir / "action.d" / "record.conf").write_text(
            "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n"
            f"actionban = echo \"<ip> <bancount> <failures>\" >> {record}\nactionunban =\n"
        )
    lines = ["[DEFAULT]", "backend = polling", "usedns = no", "ignoreself = false", "ignoreip =", ""]
    for name, opts in jails.items():
        lines += [f"[{name}]", "enabled = true", f"logpath = {logpath}"]
        if record is not None:
            lines.append("action = record")
        lines += [f"{k} = {v}" for k, v in opts.items()]
        lines.append("")
    (confdir / "jail.conf").write_text("\n".join(lines))


def maillens_engine(jails: dict[str, dict[str, Any]]) -> BanEngine:
    """The same jails in maillens: no built-in jails, nothing protected (as the fail2ban side)."""
    section: dict[str, Any] = {"default_jails": False, "loopback": [], "ignoreself": False,
                               "mynetworks": False, "access_client": False, "history": -1, "jails": {}}  # fmt: skip
    for name, opts in jails.items():
        cfg: dict[str, Any] = {}
        for key, value in opts.items():
            if key == "filter":
                base, _, params = value.partition("[")
                cfg["filter"] = f"/etc/fail2ban/filter.d/{base}.conf" + (f"[{params}" if params else "")
            elif key in ("maxretry",):
                cfg[key] = int(value)
            elif key in ("bantime.increment", "bantime.overalljails"):
                cfg[key] = value == "true"
            elif key == "bantime.factor":
                cfg[key] = float(value)
            else:
                cfg[key] = value
        section["jails"][name] = cfg
    settings = BanSettings.from_section(section)
    return BanEngine(settings, NeverBan.from_settings(settings, None, own=[]))


# --------------------------------------------------------------------------- replay oracle

REPLAY_CASES = {
    # the differential jail, with increments, on the high-precision log
    "aggressive-increment": ("real-postfix-dev", "maillog.rfc3339", {
        "test": {"filter": "postfix[mode=aggressive]", "maxretry": "3", "findtime": "600", "bantime": "3600",
                 "bantime.increment": "true"},
    }),
    # short findtime: tickets outgrow it all the time (rate scaling), bans expire and come back
    "rate-scaling-multipliers": ("real-postfix-dev", "maillog", {
        "fast": {"filter": "postfix[mode=aggressive]", "maxretry": "5", "findtime": "60", "bantime": "300",
                 "bantime.increment": "true", "bantime.multipliers": "1 2 4 8 16", "bantime.maxtime": "1800"},
    }),
    # two jails sharing the ban history (overalljails), one with permanent bans
    "overalljails-permanent": ("real-postfix-suggest-dev", "maillog", {
        "more": {"filter": "postfix[mode=more]", "maxretry": "2", "findtime": "30", "bantime": "120",
                 "bantime.increment": "true", "bantime.overalljails": "true", "bantime.factor": "2"},
        "auth": {"filter": "postfix[mode=auth]", "maxretry": "3", "findtime": "300", "bantime": "-1"},
        "ddos": {"filter": "postfix[mode=ddos]", "maxretry": "4", "findtime": "20", "bantime": "90",
                 "bantime.increment": "true", "bantime.overalljails": "true", "bantime.maxtime": "600"},
    }),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REPLAY_CASES))
def test_same_bans_as_fail2ban_classes(tmp_path: Path, case: str) -> None:
    python = fail2ban_python()
    corpus, log, jails = REPLAY_CASES[case]
    directory = corpus_dir(corpus)
    summary = json.loads((directory / "summary.json").read_text())
    reference = datetime.fromisoformat(summary["last_timestamp"])
    logfile = directory / log
    write_f2b_config(tmp_path / "conf", jails, logpath=logfile)
    out = tmp_path / "replay.json"
    proc = subprocess.run(
        [python, str(HERE / "fail2ban_replay.py"), str(tmp_path / "conf"), str(logfile), str(out),
         str(reference.timestamp())],
        capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    oracle = json.loads(out.read_text())

    engine = maillens_engine(jails)
    records: list[Any] = []
    for j in engine.jails:
        j.state.on_ban = records.append
    engine.feed_paths([str(logfile)], tz=timezone.utc, reference=reference)

    theirs = [(b["jail"], b["ip"], b["time"], b["bancount"], b["bantime"], b["failures"]) for b in oracle["bans"]]
    ours = [(r.jail, r.ip, r.time, r.ban_count, r.ban_time, r.failures) for r in records]
    assert len(theirs) > 20, "the case must produce bans to compare"
    first_diff = next(((a, b) for a, b in zip(theirs, ours) if a != b), None)
    assert first_diff is None, f"first differing ban (fail2ban, maillens): {first_diff}"
    assert ours == theirs
    assert {j.cfg.name: j.state.fail_total for j in engine.jails} == oracle["fail_total"]
    # bans in force at the last line (maillens unbans lazily; the list is as of that time)
    in_force = {j.cfg.name: sorted(e.address for e in engine.entries() if e.jail == j.cfg.name) for j in engine.jails}
    assert in_force == oracle["banned_now"]
    # the case exercises what it is meant to
    counts = collections.Counter(b[3] for b in theirs)
    if case != "overalljails-permanent":
        assert max(counts) >= 3, f"bans were expected to repeat: {counts}"
    else:
        assert any(b[4] == -1 for b in theirs) and any(b[3] >= 2 for b in theirs if b[0] != "auth")


# --------------------------------------------------------------------------- fail2ban-server


def _status(client: str, confdir: Path) -> dict[str, str]:
    proc = subprocess.run([client, "-c", str(confdir), "status", "test"], capture_output=True, text=True, timeout=30)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.strip(" |`-").partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def test_same_bans_as_fail2ban_server(tmp_path: Path) -> None:
    server = require_tool("fail2ban-server")
    client = require_tool("fail2ban-client")
    # the corpus, every line stamped now: fail2ban-server judges logs by the wall clock
    now = time.strftime("%b %e %H:%M:%S", time.localtime())
    src = corpus_dir("real-postfix-dev") / "maillog"
    log = tmp_path / "mail.log"
    with src.open(encoding="utf-8") as fin, log.open("w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(now + line[15:])
    record = tmp_path / "bans.txt"
    jail = {"filter": "postfix[mode=aggressive]", "maxretry": "3", "findtime": "600", "bantime": "3600"}
    confdir = tmp_path / "conf"
    write_f2b_config(confdir, {"test": jail}, logpath=log, record=record)

    engine = maillens_engine({"test": jail})
    records: list[Any] = []
    engine.jails[0].state.on_ban = records.append
    engine.feed_paths([str(log)])

    with (tmp_path / "server.out").open("w") as sout:
        proc = subprocess.Popen([server, "-f", "-x", "-c", str(confdir)], stdout=sout, stderr=subprocess.STDOUT)
    expected_failed = str(engine.jails[0].state.fail_total)
    try:
        # settled: it has read every line (its failure total stops at ours, or stays put for
        # 10 s elsewhere) and its actions have taken every ban (the ban total holds still)
        deadline = time.monotonic() + 120
        last: tuple[str, str] | None = None
        stable = 0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "server.out").read_text()[-2000:]
            st = _status(client, confdir)
            now_counts = (st.get("Total failed", ""), st.get("Total banned", ""))
            if st and now_counts == last and now_counts[0] not in ("", "0"):
                stable += 1
                if stable >= (3 if now_counts[0] == expected_failed else 20):
                    break
            else:
                stable = 0
            last = now_counts
        else:
            pytest.fail(f"fail2ban-server did not settle in 120 s: {last}")
        banned_list = set(st.get("Banned IP list", "").split())
    finally:
        subprocess.run([client, "-c", str(confdir), "stop"], capture_output=True, timeout=30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    theirs = collections.Counter(line.split()[0] for line in record.read_text().splitlines())
    ours = collections.Counter(r.ip for r in records)
    assert len(theirs) > 100
    assert ours == theirs  # same addresses, each banned the same number of times
    assert banned_list == {e.address for e in engine.entries()}
    assert int(last[0]) == engine.jails[0].state.fail_total  # type: ignore[index]
    assert int(last[1]) == engine.jails[0].state.ban_total  # type: ignore[index]
    # the bancount fail2ban gave each ban equals maillens's
    their_counts = collections.Counter((line.split()[0], line.split()[1]) for line in record.read_text().splitlines())
    assert collections.Counter((r.ip, str(r.ban_count)) for r in records) == their_counts
