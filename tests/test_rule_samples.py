"""Rule files carry their own samples: ``tests/rule-samples/<filter>.log``.

Each sample line has its expected event in a ``# maillens: {json}`` comment right
above it (like fail2ban's ``# failJSON:``); the format is in
``tests/rule-samples/README.md``.  One harness runs them all and fails when a rule
file in ``parsers/`` has no samples or a failregex that no sample exercises.  The
sample files are also run through the real fail2ban-regex: the filter must report
the same lines and hosts there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from fail2ban_oracle import compare
from maillens.classify import Classifier
from maillens.filterconf import load_filter, parsers_dir

SAMPLES = Path(__file__).resolve().parent / "rule-samples"
MARK = "# maillens:"
ENVELOPE_KEYS = ("queue_id", "program", "pid", "host")
UTC = timezone.utc
REFERENCE = datetime(2026, 11, 25, tzinfo=UTC)  # gives the samples' "Nov  9" stamps their year
RULE_FILES = [p for p in sorted(parsers_dir().glob("*.conf")) if load_filter(str(p)).failregex]


@dataclass(frozen=True)
class Sample:
    rule_file: Path
    lineno: int
    line: str
    expected: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.rule_file.stem}:{self.lineno}"


def sample_file(rule_file: Path) -> Path:
    return SAMPLES / f"{rule_file.stem}.log"


def read_samples(rule_file: Path) -> list[Sample]:
    """The samples of one rule file; a malformed file raises AssertionError."""
    path = sample_file(rule_file)
    if not path.is_file():
        return []
    samples: list[Sample] = []
    pending: tuple[int, dict[str, Any]] | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith(MARK):
            assert pending is None, f"{path.name}:{pending[0]}: expectation without a sample line below it"
            try:
                expected = json.loads(line[len(MARK):])
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{path.name}:{lineno}: not JSON after '{MARK}': {exc}") from None
            assert isinstance(expected, dict) and "kind" in expected, f"{path.name}:{lineno}: needs a \"kind\""
            pending = (lineno, expected)
        elif pending is not None:
            assert line and not line.startswith("#"), f"{path.name}:{lineno}: the sample must follow its expectation"
            samples.append(Sample(rule_file, lineno, line, pending[1]))
            pending = None
        else:
            assert not line or line.startswith("#"), f"{path.name}:{lineno}: a sample line without expectation"
    assert pending is None, f"{path.name}:{pending[0]}: expectation at the end of the file"
    return samples


def _all_samples() -> list[Any]:
    params = []
    for rule_file in RULE_FILES:
        for sample in read_samples(rule_file):
            gap = sample.expected.get("known_gap")
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(sample, id=sample.id, marks=marks))
    return params


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.stem)
def test_every_rule_file_has_samples(rule_file: Path) -> None:
    samples = read_samples(rule_file)
    assert samples, f"{rule_file.name} has no samples: add {sample_file(rule_file).relative_to(SAMPLES.parent)}"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.stem)
def test_every_failregex_has_a_sample(rule_file: Path) -> None:
    flt = load_filter(str(rule_file))
    covered = set()
    for sample in read_samples(rule_file):
        m = flt.match_line(sample.line)
        if m is not None:
            covered.add(m.regex.index)
    missing = [rx.index + 1 for rx in flt.failregex if rx.index not in covered]
    assert not missing, f"{rule_file.name}: no sample for failregex {missing}"


@pytest.mark.parametrize("sample", _all_samples())
def test_sample(sample: Sample) -> None:
    """The line is classified by its own rule file, as the comment above it says."""
    expected = dict(sample.expected)
    expected.pop("known_gap", None)
    ev = Classifier(tz=UTC, reference_time=REFERENCE).classify(sample.line)
    assert ev.rule is not None and ev.rule.startswith(sample.rule_file.name + ":"), (
        f"classified by {ev.rule}, not by {sample.rule_file.name} ({ev.kind})")
    assert load_filter(str(sample.rule_file)).match_line(sample.line) is not None, "the rule file alone misses it"
    got = {"kind": ev.kind}
    for key in expected:
        if key == "kind":
            continue
        got[key] = getattr(ev, key) if key in ENVELOPE_KEYS else ev.data.get(key)
    assert got == expected


@pytest.mark.oracle
@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.stem)
def test_samples_agree_with_fail2ban_regex(rule_file: Path) -> None:
    """The real fail2ban-regex, run on the sample file, reports what maillens match reports."""
    path = sample_file(rule_file)
    assert path.is_file(), f"{rule_file.name} has no samples"
    both, problems = compare(str(path), str(rule_file))
    assert not problems, "\n".join(problems[:15])
    settled = [s for s in read_samples(rule_file) if "known_gap" not in s.expected]
    assert both >= len(settled), "fail2ban-regex should match every sample of its rule file"
