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
