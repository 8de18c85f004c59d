"""A user adds rules by dropping fail2ban filter files in ``[parse] rules_dirs``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RULE = r"""
[INCLUDES]
before = maillens-common.conf

[Definition]
_daemon = postfix(?:-[\w.\-]+)?/(?:[\w.\-]+/)*verify
failregex = (?#kind=notice topic=address_verification)^<F-ID>[0-9A-Za-z]{6,}</F-ID>: address verification for <<F-RECIPIENT>[^>]*</F-RECIPIENT>> <F-RESULT>\w+</F-RESULT>$
maillens_priority = 10
"""
LINES = [
    "Nov  9 08:41:22 mx postfix/verify[42]: 4jNNYF2l5FzJ9cR: address verification for <bob@example.org> passed",
    "Nov  9 08:41:23 mx postfix/smtpd[43]: connect from a.example[192.0.2.1]",
]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "site-verify.conf").write_text(RULE)
    (rules / "maillens-common.conf").write_text((Path(__file__).parents[1] / "parsers" / "maillens-common.conf").read_text())
    config = tmp_path / "config.toml"
    config.write_text(f'[parse]\nrules_dirs = ["{rules}"]\n')
    log = tmp_path / "mail.log"
    log.write_text("\n".join(LINES) + "\n")
    return subprocess.run([sys.executable, "-m", "maillens", "--config", str(config), *args, str(log)],
                          capture_output=True, text=True, check=False)


def test_a_users_rule_classifies_its_lines(tmp_path: Path) -> None:
    result = run(tmp_path, "parse", "--json")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["kind"] == "notice" and first["topic"] == "address_verification"
    assert first["recipient"] == "bob@example.org" and first["result"] == "passed"
    assert first["queue_id"] == "4jNNYF2l5FzJ9cR"
    assert second["kind"] == "connect"  # maillens's own rules still apply


def test_stats_workers_use_the_users_rules_too(tmp_path: Path) -> None:
    result = run(tmp_path, "parse", "--stats", "--json", "--workers", "2")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["kinds"] == {"notice": 1, "connect": 1}
    assert stats["unexplained"] == []
