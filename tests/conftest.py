"""Shared test helpers: the corpus, real tools, and CI strictness.

The corpus ships compressed in ``tests/corpus/*.tar.xz`` (unedited copies of
``../shared/corpus``) and is unpacked once into ``tests/corpus/.cache``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from functools import lru_cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CORPUS_ARCHIVES = HERE / "corpus"
CACHE = CORPUS_ARCHIVES / ".cache"
CORPORA = ("real-postfix-dev", "real-postfix-suggest-dev")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, *, reason: str = "") -> str:
    """Return the path of a real tool; skip locally when missing, fail in CI.

    The brief: in CI a test whose real tool is missing fails, it never skips quietly.
    """
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )
    if path:
        return path
    message = f"real tool {name!r} is not installed{': ' + reason if reason else ''}"
    if IN_CI:
        pytest.fail(message + " (CI=true: .ci/run must install it)")
    pytest.skip(message)
    raise AssertionError("unreachable")


@lru_cache(maxsize=None)
def corpus_dir(name: str) -> Path:
    """The unpacked corpus directory ``name`` (e.g. ``real-postfix-dev``)."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {CORPORA}")
    target = CACHE / name
    marker = target / ".complete"
    if not marker.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = CACHE / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(CORPUS_ARCHIVES / f"{name}.tar.xz") as tar:
            tar.extractall(tmp, filter="data")
        for path in tmp.rglob("*"):  # the archive keeps the read-only modes of shared/
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp / name, target)
        except OSError:
            if not marker.exists():
                raise
        (target / ".complete").touch()
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="session", params=CORPORA)
def any_corpus(request: pytest.FixtureRequest) -> Path:
    """Parametrised over every corpus."""
    return corpus_dir(request.param)


@pytest.fixture(scope="session")
def dev_corpus() -> Path:
    return corpus_dir("real-postfix-dev")


@pytest.fixture(scope="session")
def suggest_corpus() -> Path:
    return corpus_dir("real-postfix-suggest-dev")


@lru_cache(maxsize=None)
def corpus_events(name: str, log: str = "maillog") -> tuple:
    """Every event of a corpus log, classified once per test session.

    Time stamps are read in UTC (the corpus's zone) with the year taken from
    the corpus's own summary, so results do not depend on the machine's clock.
    """
    import json
    from datetime import datetime, timezone

    from maillens.classify import Classifier
    from maillens.sources import iter_events

    directory = corpus_dir(name)
    summary = json.loads((directory / "summary.json").read_text())
    last = datetime.fromisoformat(summary["last_timestamp"])
    classifier = Classifier(tz=timezone.utc)
    events = []
    for ev in iter_events([str(directory / log)], classifier=_FixedReference(classifier, last)):
        events.append(ev)
    return tuple(events)


class _FixedReference:
    """A classifier wrapper that ignores file mtimes: the corpus's end is the reference."""

    def __init__(self, classifier, reference):  # type: ignore[no-untyped-def]
        self._classifier = classifier
        self._reference = reference

    def start_source(self, _reference):  # type: ignore[no-untyped-def]
        self._classifier.start_source(self._reference)

    def classify(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._classifier.classify(*args, **kwargs)
