"""Replay a log through fail2ban's own classes, one line at a time, on log time.

Run by the interpreter fail2ban is installed for (``tests/test_bans.py``
finds it from ``fail2ban-server``'s ``#!`` line), not by maillens's::

    /usr/bin/python3 tests/fail2ban_replay.py CONFDIR LOGFILE OUT.json [REFERENCE_EPOCH]

CONFDIR is a fail2ban configuration directory (``fail2ban.conf``,
``jail.conf``, ``filter.d``); its jails are built by fail2ban's
``Configurator`` and ``Server`` exactly as ``fail2ban-server`` builds them,
but no thread is started.  Instead every line of LOGFILE is handled in the
fixed order maillens's ``banmodel`` documents: set fail2ban's clock
(``MyTime``) to the line's time (found by the jail's own date detector),
unban what expired, ``processLineAndAdd``, then let the actions take the
queued tickets.  The observer (``bantime.increment``) runs synchronously.
OUT.json gets every ban with fail2ban's ticket fields, and the failure
totals.
"""

from __future__ import annotations

import json
import sys


def main(confdir: str, logfile: str, out: str, reference: float | None) -> None:
    from fail2ban.client.configurator import Configurator
    from fail2ban.server.mytime import MyTime
    from fail2ban.server.observer import ObserverThread, Observers
    from fail2ban.server.server import Server
    from fail2ban.server.transmitter import Transmitter

    if reference is not None:
        MyTime.setTime(reference)
    conf = Configurator()
    conf.setBaseDir(confdir)
    conf.readAll()
    conf.getOptions()
    conf.convertToProtocol()
    stream = conf.getConfigStream()

    observer = ObserverThread()
    # synchronous observer: run each event at once, never start timers
    observer.add = lambda name, *args: (name if callable(name) else getattr(observer, name))(*args)  # type: ignore[method-assign]
    observer.add_timer = lambda *a, **k: None  # type: ignore[method-assign]
    observer.add_named_timer = lambda *a, **k: None  # type: ignore[method-assign]
    Observers.Main = observer

    server = Server()
    transm = Transmitter(server)
    for cmd in stream:
        if cmd[0] == "start" or (cmd[0] == "set" and cmd[1] in ("logtarget", "syslogsocket", "loglevel")):
            continue
        code, res = transm.proceed(cmd)
        if code != 0:
            raise SystemExit(f"fail2ban refused {cmd!r}: {res!r}")
    observer.db_set(server.getDatabase())

    jails = [server._Server__jails[name] for name in server._Server__jails.keys()]  # type: ignore[attr-defined]
    bans: list[dict] = []

    class Recorder:
        """Stands in for the jail's actions: records what ``ban`` is called with."""

        def __init__(self, jail) -> None:  # type: ignore[no-untyped-def]
            self.jail = jail
            self.banEpoch = 0
            self.norestored = False

        def ban(self, aInfo) -> None:  # type: ignore[no-untyped-def]
            bans.append({
                "jail": self.jail.name,
                "ip": str(aInfo["ip"]),
                "time": aInfo["time"],
                "failures": aInfo["failures"],
                "bancount": aInfo["bancount"],
                "bantime": aInfo["bantime"],
            })  # fmt: skip

        def reban(self, aInfo) -> None:  # type: ignore[no-untyped-def]
            pass

        def unban(self, aInfo) -> None:  # type: ignore[no-untyped-def]
            pass

    for jail in jails:
        jail.isAlive = lambda: True  # the observer only works for live jails
        jail.actions._actions.clear()
        jail.actions._actions["recorder"] = Recorder(jail)

    last = reference
    with open(logfile, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            for jail in jails:
                flt = jail.filter
                match = flt.dateDetector.matchTime(line)
                t = None
                if match[0]:
                    m = match[0]
                    got = flt.dateDetector.getTime(line[m.start(1):m.end(1)], match)
                    t = got[0] if got else None
                if t is None:
                    t = last
                if t is not None:
                    MyTime.setTime(t)
                    last = t
                jail.actions._Actions__checkUnBan(0x7FFFFFFF)
                flt.processLineAndAdd(line)
                jail.actions._Actions__checkBan()

    result = {
        "bans": bans,
        "fail_total": {j.name: j.filter.failManager.getFailTotal() for j in jails},
        "ban_total": {j.name: j.actions.banManager.getBanTotal() for j in jails},
        "banned_now": {j.name: sorted(str(ip) for ip in j.actions.banManager.getBanList()) for j in jails},
    }
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    ref = float(sys.argv[4]) if len(sys.argv) > 4 else None
    main(sys.argv[1], sys.argv[2], sys.argv[3], ref)
