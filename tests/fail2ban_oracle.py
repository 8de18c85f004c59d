"""The real ``fail2ban-regex`` as an oracle, and ``maillens match`` to set beside it.

How fail2ban-regex is run, and why (Debian's fail2ban 1.0):

* ``-o <fid>\\x1f<F-NAME>...\\x1f<matches>\\x1e`` -- one machine-readable record per
  failure: fail2ban's failure id, the captures asked for (empty when absent) and
  the log lines of the failure, the reported line last.  ``-o`` also makes
  fail2ban-regex behave like the daemon: the first failregex that matches decides
  (no "check all regexes"), lines still waiting for an id are not reported.
* ``--raw``: a ``<HOST>`` that matched a name is reported as written, never looked
  up in DNS (maillens never resolves either; addresses -- what the compared filters
  capture -- are reported the same with or without it).
* ``-e utf-8``: decode as maillens does, whatever the machine's locale.
* Old dates need no flag: fail2ban-regex turns off fail2ban's "ignore lines older
  than findtime" check and accepts any year (1.0 has no ``--nodatechecks``); only
  the lines and ids are compared, so the time zone does not matter either.

fail2ban-regex does not say which line a record came from (and writes NUL
bytes as ``\\x00``); records come in log
order and identical lines give identical results, so each record's last line is
matched to the next line of the log with that text.  fail2ban never reads a last
line without a newline (it waits for the line's end), so logs compared here must
end with one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import IN_CI, require_tool

FIELD_SEP = "\x1f"
RECORD_END = "\x1e"
FAIL2BAN_LOG_DIRS = tuple(Path(p) for p in (
    "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs",
    "/usr/share/fail2ban/tests/files/logs",
))

Result = dict[int, tuple[str, dict[str, str]]]  # lineno -> (failure id, captures)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}


def log_lines(log: Path) -> list[str]:
    """The log's lines as fail2ban reads them (split at newlines only, CR LF trimmed)."""
    data = log.read_bytes()
    assert data.endswith(b"\n"), f"{log} must end with a newline (fail2ban waits for a line's end)"
    return [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in data[:-1].split(b"\n")]


@lru_cache(maxsize=None)
def fail2ban_regex(log: str, spec: str, fields: tuple[str, ...] = ()) -> Result:
    """What the real fail2ban-regex reports for each line of ``log`` with filter ``spec``."""
    tool = require_tool("fail2ban-regex")
    fmt = FIELD_SEP.join(["<fid>", *(f"<F-{name.upper()}>" for name in fields), "<matches>"]) + RECORD_END
    proc = subprocess.run([tool, "--raw", "-e", "utf-8", "-o", fmt, log, spec],
                          capture_output=True, text=True, encoding="utf-8", env=_env(), timeout=300)
    assert proc.returncode == 0, f"fail2ban-regex could not run {spec} on {log}:\n{proc.stdout}{proc.stderr}"
    lines = log_lines(Path(log))
    result: Result = {}
    pos = 0
    for record in proc.stdout.split(RECORD_END + "\n"):
        if not record:
            continue
        parts = record.split(FIELD_SEP)
        assert len(parts) == len(fields) + 2, f"unexpected fail2ban-regex record: {record!r}"
        reported = parts[-1].split("\n")[-1]
        while _escaped(lines[pos]) != reported:
            pos += 1
        result[pos + 1] = (parts[0], dict(zip(fields, parts[1:-1])))
        pos += 1
    return result


def _escaped(text: str) -> str:
    """fail2ban-regex's ``-o`` writes NUL bytes in values as ``\\x00``."""
    return text.replace("\x00", "\\x00")


def fail2ban_regex_view(spec: str) -> dict[str, object]:
    """How fail2ban-regex reads a filter: its regexes after all substitution, maxlines, datepattern.

    ``-v`` lists every failregex and ignoreregex as given to fail2ban's server
    (tags substituted, ``<HOST>``-style tags still in), and the prefregex as
    compiled (those tags resolved).
    """
    tool = require_tool("fail2ban-regex")
    proc = subprocess.run([tool, "-v", "Jan  1 00:00:00 h x[1]: y", spec],
                          capture_output=True, text=True, encoding="utf-8", env=_env(), timeout=120)
    assert proc.returncode == 0, f"fail2ban-regex could not load {spec}:\n{proc.stdout}{proc.stderr}"
    out = proc.stdout
    view: dict[str, object] = {"failregex": [], "ignoreregex": [], "prefregex": None, "maxlines": 1,
                               "datepattern": None}
    section = None
    lines = out.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Prefregex:"):
            view["prefregex"] = lines[i + 1][3:]
        elif line.startswith("Failregex:"):
            section = "failregex"
        elif line.startswith("Ignoreregex:"):
            section = "ignoreregex"
        elif line.startswith("Date template hits"):
            section = None
        elif section and (m := re.match(r"^\|\s+\d+\) \[\d+\] (.*)$", line)):
            view[section].append(m.group(1))  # type: ignore[union-attr]
        elif m := re.match(r"^Use\s+maxlines : (\d+)", line):
            view["maxlines"] = int(m.group(1))
    if m := re.search(r"^Use\s+datepattern : (.*?) : ", out, re.M | re.S):
        view["datepattern"] = m.group(1)
    return view


def maillens_view(spec: str) -> dict[str, object]:
    """The same view from maillens's loader."""
    from maillens.filterconf import load_filter

    flt = load_filter(spec)
    return {"failregex": [rx.text for rx in flt.failregex], "ignoreregex": [rx.text for rx in flt.ignoreregex],
            "prefregex": flt.prefregex.pattern.pattern if flt.prefregex else None, "maxlines": flt.maxlines,
            "datepattern": flt.datepattern}


def maillens_match(log: str, spec: str) -> dict[int, dict[str, object]]:
    """``maillens match --filter SPEC LOG --json``: lineno -> the printed object."""
    from maillens.cli.main import cli

    result = CliRunner().invoke(cli, ["match", "--filter", spec, log, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out: dict[int, dict[str, object]] = {}
    for line in result.stdout.splitlines():
        obj = json.loads(line)
        assert obj["source"] == log
        out[obj["lineno"]] = obj
    return out


def capture_names(spec: str) -> tuple[str, ...]:
    """Every ``<F-NAME>`` capture of a filter (fail2ban-regex is asked for each)."""
    from maillens.filterconf import load_filter

    flt = load_filter(spec)
    names: set[str] = set()
    for rx in [*flt.failregex, *([flt.prefregex] if flt.prefregex else [])]:
        names |= rx.captures
    names -= {"content", "host", "source", "lineno"}
    return tuple(sorted(names))


def compare(log: str, spec: str, *, with_fields: bool = True) -> tuple[int, list[str]]:
    """(lines both matched, differences) between maillens match and fail2ban-regex."""
    fields = capture_names(spec) if with_fields else ()
    theirs = fail2ban_regex(log, spec, fields)
    ours = maillens_match(log, spec)
    lines = log_lines(Path(log))
    problems: list[str] = []
    for lineno in sorted(set(theirs) | set(ours)):
        text = lines[lineno - 1]
        if lineno not in ours:
            problems.append(f"line {lineno}: only fail2ban matches (id {theirs[lineno][0]}): {text}")
            continue
        if lineno not in theirs:
            problems.append(f"line {lineno}: only maillens matches (host {ours[lineno]['host']}): {text}")
            continue
        fid, captures = theirs[lineno]
        if ours[lineno]["host"] != fid:
            problems.append(f"line {lineno}: host {ours[lineno]['host']!r} != fail2ban's {fid!r}: {text}")
        for name in fields:
            mine = ours[lineno].get(name)
            if _escaped("" if mine is None else str(mine)) != captures[name]:
                problems.append(f"line {lineno}: {name} {mine!r} != fail2ban's {captures[name]!r}: {text}")
    return len(set(theirs) & set(ours)), problems


def fail2ban_test_log(name: str) -> Path:
    """One of the sample logs Debian's fail2ban ships with its tests."""
    require_tool("fail2ban-regex")
    for directory in FAIL2BAN_LOG_DIRS:
        if (directory / name).is_file():
            return directory / name
    message = f"fail2ban's test log {name!r} is not installed (looked in {', '.join(map(str, FAIL2BAN_LOG_DIRS))})"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")
