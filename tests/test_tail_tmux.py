"""``maillens tail -F`` in a real terminal: tmux runs it, we type and read the screen.

A writer appends real corpus lines to a log that is rotated twice under the
running view (rename+create with the writer still holding the old file, then
copytruncate).  From tmux's own screen and scroll-back we check that every line
was shown exactly once and in order, that each session's lines carry the tags its
``log_index.jsonl`` labels say, that the bottom bar's counts and top offenders
match, that escape sequences in a HELO reach the screen neutralised (tmux would
otherwise retitle the pane or clear the screen), and that Ctrl-C exits 130
leaving the terminal as it was.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import corpus_dir, require_tool
from tests.test_live import EXACT_TAGS, HOSTILE_HELO, truth_tag

pytestmark = pytest.mark.slow
WIDTH, HEIGHT = 250, 40
LINE_RE = re.compile(r"^(?P<src>\S+):(?P<lineno>\d+) (?P<time>\d\d:\d\d:\d\d|--------) (?P<tag>[A-Z][A-Z-]*) ")
BAR_RE = re.compile(r"^(?:[A-Z][A-Z-]* \d+  )*lines \d+$")
OFFENCE_PREFIXES = ("reject:", "sasl_fail:", "lost_connection:", "improper_pipelining:", "too_many_errors")


class Tmux:
    """A private tmux server (own socket, no user config) with one shell pane."""

    def __init__(self, tmp: Path) -> None:
        self.tmux = require_tool("tmux")
        self.socket = str(tmp / "tmux.sock")
        conf = tmp / "tmux.conf"
        conf.write_text("set -g history-limit 100000\nset -g status off\n")
        # rich would believe COLUMNS/LINES over the terminal; NO_COLOR etc. do not matter to the text
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX") and k not in ("COLUMNS", "LINES")}
        env.update(PS1="$ ", HISTFILE="/dev/null")
        subprocess.run([self.tmux, "-S", self.socket, "-f", str(conf), "new-session", "-d", "-x", str(WIDTH),
                        "-y", str(HEIGHT), "bash --norc --noprofile"], check=True, env=env, timeout=20)
        self.cmd("set-option", "-g", "allow-rename", "on")
        self.cmd("set-option", "-gw", "allow-rename", "on")

    def cmd(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-S", self.socket, *args], check=True, capture_output=True,
                              timeout=20).stdout.decode()

    def type(self, text: str) -> None:
        self.cmd("send-keys", "-l", text)
        self.cmd("send-keys", "Enter")

    def screen(self) -> list[str]:
        return self.cmd("capture-pane", "-p").splitlines()

    def history(self) -> list[str]:
        return self.cmd("capture-pane", "-p", "-J", "-S", "-", "-E", "-").splitlines()

    def wait(self, pred: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; screen:\n" + "\n".join(self.screen()))

    def kill(self) -> None:
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture()
def tmux(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = Tmux(tmp_path)
    yield t
    t.kill()


def maillens_script(tmp: Path) -> str:
    script = tmp / "maillens"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                      f"'from maillens.cli.main import cli; cli()' \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def pick_sessions(index: list[dict], per_scenario: int = 2) -> list[dict]:
    """The first sessions of every scenario, plus the ones whose mail was deferred/bounced/expired."""
    chosen: dict[str, dict] = {}
    seen: Counter[str] = Counter()
    for s in index:
        if seen[s["scenario"]] < per_scenario:
            seen[s["scenario"]] += 1
            chosen[s["sid"]] = s
    for s in index:
        labels = " ".join(s["log_events"])
        if len(chosen) < 160 and ("expired" in labels or "bounced" in labels or "sasl_ok" in labels):
            chosen[s["sid"]] = s
    return list(chosen.values())


class Writer:
    """Appends lines the way rsyslog does: one open descriptor, reopened only after rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "a")

    def write(self, lines: list[str], rate: float = 800.0) -> None:
        for i, line in enumerate(lines, 1):
            self.fh.write(line + "\n")
            if i % 20 == 0:
                self.fh.flush()
                time.sleep(20 / rate)
        self.fh.flush()

    def reopen(self) -> None:
        self.fh.close()
        self.fh = open(self.path, "a")


def shown_lines(tmux: Tmux, log: Path) -> list[re.Match[str]]:
    return [m for line in tmux.history() if (m := LINE_RE.match(line)) and m.group("src").endswith(log.name)]


def test_tail_F_in_a_real_terminal_across_rotations(tmux: Tmux, tmp_path: Path) -> None:
    corpus = corpus_dir("real-postfix-dev")
    all_lines = (corpus / "maillog").read_text().splitlines()
    index = [json.loads(x) for x in (corpus / "log_index.jsonl").read_text().splitlines()]
    sessions = pick_sessions(index)
    numbers = sorted(n for s in sessions for n in s["maillog_lines"])
    lines = [all_lines[n - 1] for n in numbers]
    log = tmp_path / "mail.log"
    log.touch()
    config = tmp_path / "config.toml"
    config.write_text("[tail]\nwindow_minutes = 100000\n")
    maillens = maillens_script(tmp_path)

    tmux.type(f"cd {shlex.quote(str(tmp_path))}; stty -g > stty.before")
    tmux.type(f"{maillens} --config config.toml tail -F -n 0 --source mail.log")
    tmux.wait(lambda: any(line.startswith("lines 0") for line in tmux.screen()), 30, "the counts bar")

    a, b = len(lines) // 3, 2 * len(lines) // 3
    writer = Writer(log)
    writer.write(lines[: a - 10])
    # rename + create: the writer goes on writing into the renamed file until it reopens
    os.rename(log, tmp_path / "mail.log.1")
    writer.write(lines[a - 10: a])
    time.sleep(0.2)
    writer.reopen()
    writer.write(lines[a:b])
    # copytruncate, right after a burst the view may not have read yet
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
    shutil.copyfile(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    writer.write(lines[b:])
    tmux.wait(lambda: len(shown_lines(tmux, log)) >= len(lines), 60, f"{len(lines)} lines on screen")
    time.sleep(0.5)
    shown = shown_lines(tmux, log)

    # every line once, in order: the line numbers are those the three generations really had
    first_gen = a
    second_gen = b - a
    expected_numbers = (list(range(1, first_gen + 1)) + list(range(1, second_gen + 1))
                        + list(range(1, len(lines) - b + 1)))
    assert [int(m.group("lineno")) for m in shown] == expected_numbers
    assert len(shown) == len(lines)

    # classified as the corpus truth says, session by session
    tag_of_line = {n: m.group("tag") for n, m in zip(numbers, shown)}
    for s in sessions:
        seen = Counter(tag_of_line[n] for n in s["maillog_lines"])
        want: Counter[str] = Counter({"CONNECT": 1, "DISCONN": 1})
        for label, count in s["log_events"].items():
            if tag := truth_tag(label):
                want[tag] += count
        assert {t: seen[t] for t in EXACT_TAGS} == {t: want[t] for t in EXACT_TAGS}, s["sid"]

    # the bottom bar: counts of what was shown, and the top offenders of the sessions' truth
    screen = [line for line in tmux.screen() if line.strip()]
    counts_line, offenders_line = screen[-2], screen[-1]
    bar = dict((k, int(v)) for k, v in re.findall(r"([A-Z][A-Z-]*) (\d+)", counts_line))
    assert bar == dict(Counter(m.group("tag") for m in shown))
    assert f"lines {len(lines)}" in counts_line
    offences: Counter[str] = Counter()
    for s in sessions:
        offences[s["client_ip"]] += sum(c for k, c in s["log_events"].items() if k.startswith(OFFENCE_PREFIXES))
    top = sorted(offences.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert offenders_line.strip() == "top offenders (100000 min): " + "  ".join(f"{ip} ×{n}" for ip, n in top)

    # Ctrl-C: status 130, cursor visible, tty settings untouched, the bar left on screen
    tmux.cmd("send-keys", "C-c")
    tmux.type("echo EXIT=$?; stty -g > stty.after")
    tmux.wait(lambda: "EXIT=130" in tmux.screen(), 20, "exit status 130")
    assert tmux.cmd("display-message", "-p", "#{cursor_flag}").strip() == "1"
    tmux.wait(lambda: (tmp_path / "stty.after").exists() and (tmp_path / "stty.after").stat().st_size > 0, 10)
    assert (tmp_path / "stty.after").read_text() == (tmp_path / "stty.before").read_text()
    assert counts_line in tmux.history()
    assert "Traceback" not in "\n".join(tmux.history())


def test_escape_sequences_in_a_helo_reach_the_screen_neutralised(tmux: Tmux, tmp_path: Path) -> None:
    corpus = corpus_dir("real-postfix-dev")
    originals = [line for line in (corpus / "maillog").read_text().splitlines()
                 if "reject: RCPT" in line and "Helo command rejected" in line][:3]
    hostile = re.sub(r"helo=<[^>]*>", lambda _: f"helo=<{HOSTILE_HELO}>", originals[0])
    log = tmp_path / "mail.log"
    log.write_text(originals[1] + "\n")
    maillens = maillens_script(tmp_path)
    title_before = tmux.cmd("display-message", "-p", "#{pane_title}").strip()
    assert title_before != "owned"
    for args, initial in (("tail -F -n +1 --source mail.log", 1), ("tail -F -n 0 --raw mail.log", 0)):
        tmux.type(f"cd {shlex.quote(str(tmp_path))}; clear; {maillens} {args}")
        total = initial + 2
        tmux.wait(lambda: [x for x in tmux.screen() if BAR_RE.match(x)] == [f"lines {initial}"] if not initial
                  else any(BAR_RE.match(x) and x.endswith(f"lines {initial}") for x in tmux.screen()), 30, "the bar")
        with open(log, "a") as fh:
            fh.write(hostile + "\n" + originals[2] + "\n")
        tmux.wait(lambda: any(BAR_RE.match(x) and x.endswith(f"lines {total}") for x in tmux.screen()), 20, "the lines")
        time.sleep(0.3)
        screen = "\n".join(tmux.history())  # joined: a --raw line may wrap
        assert "helo=<\\x1b]0;owned\\x07\\x1b[2J\\x9b31mred\\u202eevil\\x00\\x7f\\x0dx>" in screen
        # the OSC did not retitle the pane, ESC[2J did not clear what was shown before it
        assert tmux.cmd("display-message", "-p", "#{pane_title}").strip() == title_before
        assert sum(1 for line in tmux.screen() if re.match(r"^(\S+:\d+ )?\d\d:\d\d:\d\d ", line)) >= 2
        tmux.cmd("send-keys", "C-c")
        tmux.type("echo EXIT=$?")
        tmux.wait(lambda: "EXIT=130" in tmux.screen(), 20, "exit status 130")
        log.write_text(originals[1] + "\n")
