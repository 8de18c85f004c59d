"""Bad input, as a user meets it: every command, every kind of wrong.

The brief: hostile logs never crash and every line is counted; bad config or
arguments give ONE line on stderr starting ``maillens:`` that says what to
fix, a non-zero ``ExitStatus``, and never a traceback; Ctrl-C exits 130.
Commands run in process through click's CliRunner (fast), with the config and
state directories pointed at a temp dir; Ctrl-C runs a real process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from maillens.cli.main import cli
from maillens.errors import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample-logs" / "mail.log"
NEEDS_LOG = ("parse", "match", "ingest", "summary", "trace", "report", "tail", "bans", "suggest", "restrictions")
ALL = (*NEEDS_LOG, "explain", "rbl")


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs for every case, made once."""
    d = tmp_path_factory.mktemp("bad")
    (d / "state").mkdir()
    (d / "xdg" / "maillens").mkdir(parents=True)
    (d / "pf").mkdir()
    (d / "pf" / "main.cf").write_text("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,"
                                      " reject_rbl_client zen.spamhaus.org\nmynetworks = 127.0.0.0/8\n")
    (d / "pf" / "master.cf").write_text("smtp      inet  n       -       y       -       -       smtpd\n")
    (d / "emptydir").mkdir()
    rnd = random.Random(7)
    (d / "junk.log").write_bytes(bytes(rnd.randrange(256) for _ in range(100_000)))
    (d / "huge.log").write_bytes(b"Nov  9 08:41:22 mx postfix/smtpd[1]: " + b"A" * 5_000_000 + b"\n")
    (d / "empty.log").write_bytes(b"")
    many = "9" * 5000  # past int()'s 4,300 digits; 23 nines are past SQLite's INTEGER
    (d / "numbers.log").write_text("\n".join([
        "Nov  9 08:41:20 mx postfix/qmgr[99999999999999999999999]: 4F3A21C0D9: from=<a@b.example>, "
        "size=99999999999999999999999, nrcpt=99999999999999999999 (queue active)",
        f"Nov  9 08:41:20 mx postfix/qmgr[1]: 4F3A21C1D9: from=<a@b.example>, size={many}, nrcpt=1 (queue active)",
        f"Nov  9 08:41:21 mx postfix/smtpd[{many}]: connect from a.example[192.0.2.1]",
        f"Nov  9 08:41:21 mx postfix/smtpd[7]: disconnect from a.example[192.0.2.1] ehlo={many} quit=1/{many} commands=2",
        "Nov  9 08:41:22 mx postfix/local[8]: 4F3A21C0D9: to=<c@d.example>, relay=local, delay=1e400, "
        "delays=0/0/0/0, dsn=2.0.0, status=sent (delivered)",
        "Nov  9 08:41:22 mx postfix/local[8]: 4F3A21C0D9: to=<c@d.example>, relay=local, delay=nan, "
        "delays=0/0/0/0, dsn=2.0.0, status=deferred (later)",
        "Nov  9 08:41:22 mx policyd-spf[9]: 99999999999999999999999 5.7.23 Message rejected due to: SPF fail - not "
        "authorized. Please see http://www.openspf.net/Why?s=mfrom;id=a@b.example;ip=192.0.2.7;r=<UNKNOWN>",
        f"Nov  9 08:41:22 mx policyd-spf[9]: {many} 5.7.23 Message rejected due to: SPF fail - not authorized.",
        "Nov  9 08:41:23 mx postfix/qmgr[1]: 4F3A21C0D9: removed",
    ]) + "\n")
    (d / "garbage.db").write_bytes(bytes(rnd.randrange(256) for _ in range(8192)))
    con = sqlite3.connect(d / "newer.db")
    con.execute("PRAGMA user_version = 999")
    con.execute("CREATE TABLE x (a)")
    con.commit()
    con.close()
    configs = {
        "bad-toml": "[report\ntop = 3\n",
        "top-ten": '[report]\ntop = "ten"\n',
        "top-fraction": "[report]\ntop = 1.5\n",
        "suggest-share": "[suggest]\nnetwork_share = 0\n",
        "smtp-timeout": "[report]\nsmtp_timeout = 0\n",
        "maxretry": "[bans.jails.sasl]\nmaxretry = -1\n",
        "rules-dirs": "[parse]\nrules_dirs = 5\n",
        "rules-dir-missing": f'[parse]\nrules_dirs = ["{d}/no-such-rules"]\n',
        "unknown-section": "[nonsense]\nfoo = 1\n",
        "unknown-key": "[report]\ntopp = 3\n",
        "store-db": "[store]\ndb = 5\n",
        "not-a-table": "report = 3\n",
    }
    for name, text in configs.items():
        (d / f"{name}.toml").write_text(text)
    return d


def base_args(cmd: str, w: Path) -> list[str]:
    """A command's invocation that works on the sample log (minus the log)."""
    return {
        "parse": ["parse", "--stats"],
        "explain": ["explain", "x"],
        "match": ["match", "--filter", "postfix"],
        "ingest": ["ingest", "--db", str(w / "state" / "ingest.db")],
        "summary": ["summary"],
        "trace": ["trace", "ABCDEF123"],
        "report": ["report", "--text", "-"],
        "tail": ["tail"],
        "bans": ["bans", "--postfix-config", str(w / "pf")],
        "suggest": ["suggest", "--postfix-config", str(w / "pf")],
        "restrictions": ["restrictions", "--postfix-config", str(w / "pf")],
        "rbl": ["rbl", "zones", "--postfix-config", str(w / "pf")],
    }[cmd]


def run(w: Path, args: list[str], stdin: bytes = b""):  # type: ignore[no-untyped-def]
    env = {"MAILLENS_STATE_DIR": str(w / "state"), "XDG_CONFIG_HOME": str(w / "xdg"), "MAILLENS_CONFIG": None,
           "XDG_STATE_HOME": str(w / "xs")}
    return CliRunner().invoke(cli, args, env=env, input=stdin)


def assert_one_line_error(result, status: ExitStatus | None = None) -> str:  # type: ignore[no-untyped-def]
    """Non-zero ExitStatus, exactly one stderr line starting 'maillens:', no traceback."""
    err = result.stderr
    assert "Traceback" not in err and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0, err
    assert result.exit_code in set(ExitStatus)
    if status is not None:
        assert result.exit_code == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("maillens: "), err
    return lines[0]


# -- config: every command refuses a broken config, naming what to fix ------------------------------

CONFIG_CASES = {  # name -> words the one line must contain
    "bad-toml": "not valid TOML",
    "top-ten": "[report] top",
    "top-fraction": "[report] top",
    "suggest-share": "[suggest] network_share",
    "smtp-timeout": "[report] smtp_timeout",
    "maxretry": "maxretry",
    "rules-dirs": "[parse] rules_dirs",
    "rules-dir-missing": "no-such-rules",
    "unknown-section": "[nonsense]",
    "unknown-key": "'topp'",
    "store-db": "[store] db",
    "not-a-table": "[report] table",
    "missing": "does not exist",
}


@pytest.mark.parametrize("cmd", ALL)
@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config(w: Path, cmd: str, case: str) -> None:
    args = base_args(cmd, w) + ([str(SAMPLE)] if cmd in NEEDS_LOG else [])
    line = assert_one_line_error(run(w, ["--config", str(w / f"{case}.toml"), *args]), ExitStatus.USAGE)
    assert CONFIG_CASES[case] in line


def test_env_carries_contrib_variables_and_checks_known_keys(w: Path) -> None:
    """The cron script exports MAILLENS_REPORT_HTML/DATE (not config keys): tolerated; a bad known key is not."""
    env = {"MAILLENS_STATE_DIR": str(w / "state"), "XDG_CONFIG_HOME": str(w / "xdg"),
           "MAILLENS_REPORT_HTML": "/tmp/x.html", "MAILLENS_REPORT_DATE": "yesterday", "MAILLENS_TAIL_POLL": "1"}
    ok = CliRunner().invoke(cli, ["parse", "--stats", str(SAMPLE)], env=env)
    assert ok.exit_code == 0, ok.stderr
    bad = CliRunner().invoke(cli, ["parse", "--stats", str(SAMPLE)], env={**env, "MAILLENS_REPORT_TOP": "ten"})
    assert "[report] top" in assert_one_line_error(bad, ExitStatus.USAGE)


def test_help_works_with_a_broken_config(w: Path) -> None:
    result = run(w, ["--config", str(w / "bad-toml.toml"), "parse", "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


# -- inputs that are not there or not readable ---------------------------------------------------

INPUT_CASES = {
    "missing": lambda w: str(w / "nope.log"),
    "directory": lambda w: str(w / "emptydir"),
    "not-a-dir": lambda w: str(SAMPLE) + "/x.log",  # ENOTDIR: root cannot read it either
}


@pytest.mark.parametrize("cmd", NEEDS_LOG)
@pytest.mark.parametrize("case", INPUT_CASES)
def test_unreadable_input(w: Path, cmd: str, case: str) -> None:
    path = INPUT_CASES[case](w)
    line = assert_one_line_error(run(w, [*base_args(cmd, w), path]))
    assert path in line or Path(path).name in line


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("cmd", ("parse", "match", "summary", "suggest", "restrictions"))
def test_read_error_is_one_line(w: Path, cmd: str) -> None:
    """/proc/self/mem exists but read() fails with EIO, even for root."""
    line = assert_one_line_error(run(w, [*base_args(cmd, w), "/proc/self/mem"]))
    assert "/proc/self/mem" in line


def test_pipe_input(w: Path, tmp_path: Path) -> None:
    """A FIFO (what <(zcat ...) gives) is read like a file: magic bytes are peeked, not sought back."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{SAMPLE}' > '{fifo}'"])
    try:
        result = run(w, ["parse", "--stats", "--json", "--workers", "0", str(fifo)])
    finally:
        writer.wait(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output)["lines"] == SAMPLE.read_bytes().count(b"\n")


# -- bad option values -------------------------------------------------------------------------------

OPTION_CASES = [
    ("summary", ["--date", "2026-13-45"]),
    ("report", ["--date", "2026-13-45"]),
    ("restrictions", ["--since", "banana"]),
    ("suggest", ["--since", "banana"]),
    ("tail", ["--since", "banana"]),
    ("bans", ["--format", "nope"]),
    ("suggest", ["--format", "nope"]),
    ("bans", ["--at", "yesterday-ish"]),
    ("parse", ["--reference-time", "junk"]),
    ("parse", ["--kind", "nope"]),
    ("parse", ["--no-such-flag"]),
    ("report", ["--top", "0"]),
]


@pytest.mark.parametrize(("cmd", "extra"), OPTION_CASES, ids=[f"{c}{e[0]}={e[1] if len(e) > 1 else ''}" for c, e in OPTION_CASES])
def test_bad_option(w: Path, cmd: str, extra: list[str]) -> None:
    line = assert_one_line_error(run(w, [*base_args(cmd, w), *extra, str(SAMPLE)]), ExitStatus.USAGE)
    assert extra[0] in line


def test_unknown_command(w: Path) -> None:
    assert "nope" in assert_one_line_error(run(w, ["nope"]), ExitStatus.USAGE)


# -- stores that are not ours --------------------------------------------------------------------------

STORE_CMDS = ("ingest", "summary", "trace", "report", "bans", "suggest", "restrictions")


def _store_args(cmd: str, w: Path, db: Path) -> list[str]:
    args = [a for a in base_args(cmd, w)]
    if "--db" in args:
        del args[args.index("--db"):args.index("--db") + 2]
    return [*args, "--db", str(db)] + ([str(SAMPLE)] if cmd == "ingest" else [])


@pytest.mark.parametrize("cmd", STORE_CMDS)
@pytest.mark.parametrize("db", ["garbage.db", "newer.db"])
def test_foreign_store(w: Path, cmd: str, db: str) -> None:
    line = assert_one_line_error(run(w, _store_args(cmd, w, w / db)), ExitStatus.DATA)
    assert db in line


@pytest.mark.parametrize("cmd", [c for c in STORE_CMDS if c != "ingest"])
def test_missing_store_for_reading(w: Path, cmd: str) -> None:
    line = assert_one_line_error(run(w, _store_args(cmd, w, w / f"none-{cmd}" / "x.db")))
    assert "ingest" in line


# -- outputs into a directory that does not exist --------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["report", "--html"], ["report", "--text"], ["-q", "bans", "--output"],
])
def test_output_into_missing_directory(w: Path, args: list[str]) -> None:
    target = w / "no-such-dir" / "out"
    assert_one_line_error(run(w, [*args, str(target), str(SAMPLE)]))
    assert not target.parent.exists()


# -- hostile logs: exit 0, every line counted ---------------------------------------------------------------

def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@pytest.mark.parametrize("log", ["junk.log", "huge.log", "empty.log", "numbers.log"])
@pytest.mark.parametrize("how", [["--json"], ["--json", "--workers", "0"], ["--json", "--kind", "unparsed"]])
def test_hostile_log_every_line_counted(w: Path, log: str, how: list[str]) -> None:
    result = run(w, ["parse", "--stats", *how, str(w / log)])
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr
    stats = json.loads(result.output)
    expected = _line_count((w / log).read_bytes())
    if "--kind" in how:  # only unparsed lines were kept; the rest are other kinds
        assert stats["lines"] <= expected
        full = json.loads(run(w, ["parse", "--stats", "--json", str(w / log)]).output)
        assert stats["lines"] == full["kinds"].get("unparsed", 0)
    else:
        assert stats["lines"] == expected
        assert sum(stats["kinds"].values()) == expected


@pytest.mark.parametrize("log", ["junk.log", "huge.log", "empty.log", "numbers.log"])
def test_hostile_log_event_per_line(w: Path, log: str) -> None:
    result = run(w, ["parse", "--json", str(w / log)])
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.output.splitlines()]
    assert len(events) == _line_count((w / log).read_bytes())
    assert [e["lineno"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("log", ["junk.log", "huge.log", "empty.log", "numbers.log"])
def test_hostile_log_ingest_counts_every_line(w: Path, log: str, tmp_path: Path) -> None:
    result = run(w, ["ingest", "--db", str(tmp_path / "i.db"), str(w / log)])
    assert result.exit_code == 0, result.stderr
    # complete lines only: an unterminated last line may still be being written; the next run reads it
    complete = (w / log).read_bytes().count(b"\n")
    assert f"ingested {complete} lines" in result.output


@pytest.mark.parametrize("cmd", ["match", "summary", "tail", "suggest", "restrictions"])
@pytest.mark.parametrize("log", ["junk.log", "huge.log", "empty.log", "numbers.log"])
def test_hostile_log_other_commands(w: Path, cmd: str, log: str) -> None:
    result = run(w, [*base_args(cmd, w), str(w / log)])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("log", ["junk.log", "huge.log", "empty.log", "numbers.log"])
def test_hostile_log_trace_is_not_found(w: Path, log: str) -> None:
    assert_one_line_error(run(w, [*base_args("trace", w), str(w / log)]), ExitStatus.NOT_FOUND)


@pytest.mark.parametrize("log", [
    "huge.log",
    "junk.log",
    "numbers.log",
    "empty.log",  # a freshly rotated log must not fail cron's ban export
])
def test_hostile_log_bans(w: Path, log: str) -> None:
    result = run(w, ["-q", *base_args("bans", w), str(w / log)])
    assert result.exit_code == 0, result.stderr


def test_report_empty_log_with_date(w: Path) -> None:
    result = run(w, ["report", "--text", "-", "--date", "2026-11-09", str(w / "empty.log")])
    assert result.exit_code == 0, result.stderr


def test_report_without_dated_lines_says_so(w: Path) -> None:
    """Without --date the report cannot choose a day: one line that says why."""
    assert "no dated log lines" in assert_one_line_error(run(w, ["report", "--text", "-", str(w / "empty.log")]))


# -- Ctrl-C ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["parse", "--json"], ["parse", "--stats"]])
def test_ctrl_c_exits_130_without_traceback(w: Path, args: list[str]) -> None:
    big = w / "big.log"
    if not big.exists():
        big.write_bytes(SAMPLE.read_bytes() * 60)
    env = {**os.environ, "MAILLENS_STATE_DIR": str(w / "state"), "XDG_CONFIG_HOME": str(w / "xdg")}
    env.pop("MAILLENS_CONFIG", None)
    # --stats reads stdin that stays open, so it is surely still running when Ctrl-C comes
    source = str(big) if "--json" in args else "-"
    proc = subprocess.Popen([sys.executable, "-m", "maillens", *args, source], env=env, start_new_session=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # as from a terminal: pytest-xdist workers ignore SIGINT, and an ignored
                            # signal would be inherited by the child
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if "--json" in args:
            assert proc.stdout is not None and proc.stdout.readline()  # it is running and writing
        else:
            import time

            assert proc.stdin is not None
            proc.stdin.write(big.read_bytes()[:5_000_000])
            proc.stdin.flush()
            time.sleep(1.0)
        assert proc.poll() is None, "finished before Ctrl-C; make the log bigger"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == ExitStatus.INTERRUPTED
    assert b"Traceback" not in err, err.decode(errors="replace")
