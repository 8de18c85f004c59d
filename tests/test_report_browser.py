"""The HTML report in real headless Chromium (Debian's ``chromium``).

Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL on fds 3/4), so
no websocket library and no TCP port are needed.  For each page the test
records every network request, console message, log entry (CSP violations
land there) and uncaught exception, then asks the live DOM what it shows,
takes screenshots (desktop, phone, dark) and prints a PDF.

The pages: a report built from a real store (the corpus log plus one
reject line whose HELO carries ``<script>``) and the hand-built sample.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import require_tool
from maillens import render
from report_fixtures import EVIL_HELO, sample_report

pytestmark = pytest.mark.oracle

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)  # fmt: skip

#: Where screenshots go; CI can keep them as artifacts via MAILLENS_SCREENSHOTS.
SHOTS = Path(os.environ.get("MAILLENS_SCREENSHOTS") or tempfile.gettempdir()) / "maillens-report-shots"


class CDP:
    """A minimal DevTools client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        # The pipe protocol wants the browser's ends on fds 3 and 4.  A tiny
        # Python trampoline moves them there: first lifted to fds >= 10 so the
        # dup2 onto 3 and 4 cannot clobber one of them (dash only knows fds 0-9).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
        for fd in (to_child_r, from_child_w):
            os.close(fd)
        to_child_r, from_child_w = high
        trampoline = "import os,sys; os.dup2(int(sys.argv[1]),3); os.dup2(int(sys.argv[2]),4); os.execv(sys.argv[3],sys.argv[3:])"
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(to_child_r), str(from_child_w), *cmd],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_child_r, from_child_w),
        )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self._next = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._from_child_r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._lock.notify_all()
                return
            self._buf += chunk
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._lock:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._lock.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"chromium did not answer {method}")
                self._lock.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str, since: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method and ev.get("sessionId") == session:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {method} from chromium within {timeout}s")
                self._lock.wait(left)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child_w)


class Page:
    """One tab; everything it did is in ``events`` (filtered to this session)."""

    def __init__(self, cdp: CDP) -> None:
        self.cdp = cdp
        target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.start = len(cdp.events)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.cdp.call(method, self.session, **params)

    def open(self, url: str) -> None:
        mark = len(self.cdp.events)
        self.call("Page.navigate", url=url)
        self.cdp.wait_event("Page.loadEventFired", self.session, mark)
        time.sleep(0.3)  # let late console/log events arrive

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"JS failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def mine(self, *methods: str) -> list[dict[str, Any]]:
        return [e for e in self.cdp.events[self.start:] if e.get("sessionId") == self.session
                and e.get("method") in methods]  # fmt: skip

    def screenshot(self, path: Path, full: bool = True) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png


@pytest.fixture(scope="module")
def browser() -> Iterator[CDP]:
    binary = require_tool("chromium", reason="the HTML report is checked in a real browser")
    profile = Path(tempfile.mkdtemp(prefix="maillens-chromium-"))
    cdp = CDP(binary, profile)
    try:
        cdp.call("Browser.getVersion", timeout=60)
        yield cdp
    finally:
        cdp.close()
        shutil.rmtree(profile, ignore_errors=True)


def problems(page: Page, url: str) -> list[str]:
    """Network requests other than the page itself, and every console/log error."""
    out = []
    for ev in page.mine("Network.requestWillBeSent"):
        req = ev["params"]["request"]["url"]
        if req != url:
            out.append(f"request {req}")
    for ev in page.mine("Runtime.consoleAPICalled"):
        out.append(f"console.{ev['params']['type']}")
    for ev in page.mine("Runtime.exceptionThrown"):
        out.append(f"exception {ev['params']['exceptionDetails'].get('text')}")
    for ev in page.mine("Log.entryAdded"):
        entry = ev["params"]["entry"]
        if entry["level"] in ("error", "warning"):
            out.append(f"log {entry['level']}: {entry['text']}")
    return out


SECTION_JS = "JSON.stringify([...document.querySelectorAll('section[id]')].map(s => s.id))"
FIGURES_JS = ("JSON.stringify(Object.fromEntries([...document.querySelectorAll('.fig')].map("
              "f => [f.id.slice(4), [f.dataset.value, f.querySelector('.v').textContent.trim()]])))")  # fmt: skip


def check_page(page: Page, path: Path, name: str) -> dict[str, Any]:
    url = path.resolve().as_uri()
    page.call("Emulation.setDeviceMetricsOverride", width=1200, height=900, deviceScaleFactor=1, mobile=False)
    page.open(url)
    assert problems(page, url) == []
    assert page.js("document.scripts.length") == 0
    assert page.js("document.querySelectorAll('[onerror],[onload],iframe,object,embed,img').length") == 0
    png = page.screenshot(SHOTS / f"{name}-desktop.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    info = {
        "sections": json.loads(page.js(SECTION_JS)),
        "figures": json.loads(page.js(FIGURES_JS)),
        "svg_rows": page.js("JSON.stringify([...document.querySelectorAll('svg g.row')].map(g => "
                            "[g.dataset.series, +g.dataset.total, g.querySelectorAll('rect').length]))"),  # fmt: skip
        "text": page.js("document.body.innerText"),
        "light_bg": page.js("getComputedStyle(document.body).backgroundColor"),
    }
    # phone: nothing wider than the screen (tables scroll inside their box)
    page.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
    page.open(url)
    info["phone_overflow"] = page.js("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(SHOTS / f"{name}-phone.png", full=False)
    # dark mode: the page follows the system preference
    page.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
    info["dark_bg"] = page.js("getComputedStyle(document.body).backgroundColor")
    page.screenshot(SHOTS / f"{name}-dark.png", full=False)
    page.call("Emulation.setEmulatedMedia", media="print", features=[])
    info["print_bg"] = page.js("getComputedStyle(document.body).backgroundColor")
    pdf = base64.b64decode(page.call("Page.printToPDF", printBackground=False)["data"])
    assert pdf.startswith(b"%PDF")
    page.call("Emulation.setEmulatedMedia", media="", features=[])
    assert problems(page, url) == []
    return info


def _luma(css: str) -> float:
    r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_sample_report_in_chromium(browser: CDP, tmp_path: Path) -> None:
    data = sample_report()
    path = tmp_path / "sample.html"
    path.write_text(render.render_html(data), encoding="utf-8")
    info = check_page(Page(browser), path, "sample")
    assert info["sections"] == ["summary", "traffic", "rejects", "spf", "rejected", "deliveries", "failures",
                                "sasl", "bans", "suggestions", "problems"]  # fmt: skip
    for fig in data.headline:
        assert info["figures"][fig.key] == [str(fig.value), str(fig.value)]
    rows = json.loads(info["svg_rows"])
    assert rows == [[s, sum(h.value(s) for h in data.hourly), sum(1 for h in data.hourly if h.value(s))]
                    for s in ("received", "delivered", "rejected", "deferred", "bounced")]  # fmt: skip
    assert EVIL_HELO in info["text"]  # shown as text, not run
    assert EVIL_HELO in info["text"].split("Allowlist suggestions", 1)[1]  # in the suggestions' evidence too
    assert info["phone_overflow"] <= 0
    assert _luma(info["light_bg"]) > 200 and _luma(info["dark_bg"]) < 60 and _luma(info["print_bg"]) > 200


def test_corpus_report_in_chromium(browser: CDP, corpus_report: Any, tmp_path: Path) -> None:
    """A report from a real store: sections, figures equal the store's, and
    the ``<script>`` HELO of an injected log line appears as text."""
    data, store_figures, evil = corpus_report
    path = tmp_path / "corpus.html"
    path.write_text(render.render_html(data), encoding="utf-8")
    page = Page(browser)
    info = check_page(page, path, "corpus")
    for section in ("summary", "traffic", "rejects", "spf", "rejected", "deliveries", "failures", "sasl", "problems"):
        assert section in info["sections"]
    for key, value in store_figures.items():
        assert info["figures"][key] == [str(value), str(value)], key
    assert evil in info["text"]
    assert page_helo(info["text"]) == evil
    assert info["phone_overflow"] <= 0


def page_helo(text: str) -> str:
    """The first row of the HELO table as the browser shows it."""
    lines = text.split("HELO names of rejected clients", 1)[1].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("HELO"))
    return lines[header + 1].split("\t")[0]


def test_text_and_empty_day_render() -> None:
    """A day without traffic still renders, with the sections hidden."""
    from datetime import date, datetime, timezone

    from maillens.reportdata import ReportData

    empty = ReportData(host="mx.example.org", day=date(2026, 1, 1), source="store x",
                       generated_at=datetime(2026, 1, 2, tzinfo=timezone.utc))  # fmt: skip
    html = render.render_html(empty)
    assert "No mail traffic was logged on this day." in html
    assert 'id="traffic"' not in html and 'id="rejects"' not in html
    assert "No mail traffic was logged" in render.render_text(empty)


@pytest.fixture(scope="module")
def corpus_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, int], str]:
    from datetime import date

    from conftest import corpus_dir
    from maillens.rollup import ReportOptions, build_report
    from maillens.store import Store
    from report_fixtures import ingest_corpus

    work = tmp_path_factory.mktemp("corpus-store")
    db = ingest_corpus(corpus_dir("real-postfix-dev"), work / "store.db", evil=True)
    day = date(2026, 11, 9)
    with Store.open(db, readonly=True) as store:
        data = build_report(store, day, options=ReportOptions(host="mx.example.org"))
        roll = store.daily_rollup(day)
        clients = store.connection.execute(
            "SELECT count(DISTINCT client_ip) FROM events WHERE day = ? AND kind = 'reject'", (day.isoformat(),)
        ).fetchone()[0]
    figures = {k: roll[k] for k in ("received", "delivered", "rejected", "deferred", "bounced", "expired",
                                    "sasl_failures", "connections")}  # fmt: skip
    figures["rejected_clients"] = clients
    return data, figures, EVIL_HELO
