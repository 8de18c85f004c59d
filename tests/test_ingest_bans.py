"""``maillens ingest --bans``: one timer keeps the store and the block list current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import corpus_dir

CONFIG = """
[bans]
loopback = []          # the corpus's clients are all 127.x: judge them as remote clients
mynetworks = false
ignoreself = false
access_client = false

[bans.jails.sasl]      # permanent, so the list "as of now" still holds the corpus's bans
bantime = -1
"""


def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maillens", "--config", str(config), *args],
                          capture_output=True, text=True, check=False)


def test_ingest_bans_writes_what_bans_from_the_store_writes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    log = corpus_dir("real-postfix-dev") / "maillog"
    out = tmp_path / "blocked.txt"
    first = run("ingest", "--db", str(tmp_path / "a.db"), "--bans", "--bans-output", str(out),
                "--bans-format", "plain", str(log), config=config)
    assert first.returncode == 0, first.stderr
    listed = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert listed, "the corpus's SASL brute-forcers are banned"
    # the same store judged by 'maillens bans' in a separate ingest + bans run gives the same list
    second = run("ingest", "--db", str(tmp_path / "b.db"), str(log), config=config)
    assert second.returncode == 0, second.stderr
    again = run("bans", "--db", str(tmp_path / "b.db"), "--format", "plain", config=config)
    assert again.returncode == 0, again.stderr
    assert sorted(listed) == sorted(line for line in again.stdout.splitlines() if line and not line.startswith("#"))


def test_bans_options_need_bans(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    result = run("ingest", "--db", str(tmp_path / "c.db"), "--bans-output", str(tmp_path / "x"),
                 str(corpus_dir("real-postfix-dev") / "maillog"), config=config)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--bans" in result.stderr


def test_quiet_runs_say_nothing_and_loud_runs_say_what_they_did(tmp_path: Path) -> None:
    """``-q`` is what cron and the timers pass: cron mails any output, so a run
    that did its work prints nothing; without it the same run says what it did."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    log = str(corpus_dir("real-postfix-dev") / "maillog")
    args = ["--bans", "--bans-output", str(tmp_path / "blocked.txt"), "--bans-format", "plain", log]
    quiet = run("-q", "ingest", "--db", str(tmp_path / "q.db"), *args, config=config)
    assert quiet.returncode == 0 and quiet.stdout == quiet.stderr == "", quiet
    assert (tmp_path / "blocked.txt").read_text().strip()
    loud = run("ingest", "--db", str(tmp_path / "l.db"), *args, config=config)
    assert loud.returncode == 0 and loud.stdout == "", loud
    assert "ingested " in loud.stderr and "wrote " in loud.stderr, loud.stderr
    matched = run("-q", "match", "--filter", "postfix", log, config=config)
    assert matched.returncode == 0 and matched.stderr == "" and matched.stdout, matched.stderr
    assert "lines matched" in run("match", "--filter", "postfix", log, config=config).stderr


def test_bad_bans_options_and_stdin_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    """A typo in --bans-format used to surface only after the whole ingest had run."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    log = str(corpus_dir("real-postfix-dev") / "maillog")
    db = tmp_path / "d.db"
    for args, words in (
        (["--bans", "--bans-format", "pf", log], "--bans-format 'pf': use one of nft,"),
        (["--bans", "--bans-apply", log], "give --bans-output FILE"),
        (["-"], "ingest cannot read standard input"),
    ):
        result = run("ingest", "--db", str(db), *args, config=config)
        assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not db.exists()
