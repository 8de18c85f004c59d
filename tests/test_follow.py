"""follow.py: tail -F semantics on real corpus lines, checked against what was written.

The truth here is the exact sequence of lines a writer put into the file; every
test asserts that the follower yields that sequence once, in order, with the
line numbers the file really has.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from maillens.errors import InputError, UsageError
from maillens.follow import (
    Follower,
    StartAt,
    TailLine,
    count_newlines,
    offset_of_last,
    offset_of_time,
)
from tests.conftest import corpus_dir

MODES = [pytest.param(True, id="inotify"), pytest.param(False, id="polling")]


@pytest.fixture(scope="module")
def corpus_lines() -> list[str]:
    return (corpus_dir("real-postfix-dev") / "maillog").read_text().splitlines()


def drain(f: Follower, want: int, timeout: float = 10.0) -> list[TailLine]:
    """Poll until ``want`` lines came (or the timeout), then make sure nothing more comes."""
    got: list[TailLine] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += f.poll(0.2)
    got += f.poll(0.05)
    return got


def texts(lines: list[TailLine]) -> list[str]:
    return [line.text for line in lines]


def write(path: Path, lines: list[str], mode: str = "a") -> None:
    with open(path, mode) as fh:
        fh.write("".join(line + "\n" for line in lines))


# -- start points --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 10, 999, 1000, 5000])
def test_last_n_lines_and_their_numbers(tmp_path: Path, corpus_lines: list[str], n: int) -> None:
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:1000])
    got = list(Follower([str(p)], start=StartAt(last=n)).lines())
    expected = corpus_lines[max(0, 1000 - n):1000]
    assert texts(got) == expected
    assert [g.lineno for g in got] == list(range(1000 - len(expected) + 1, 1001))


@pytest.mark.parametrize("spec,first", [("+1", 1), ("+500", 500), ("+1000", 1000), ("+1001", None)])
def test_from_line(tmp_path: Path, corpus_lines: list[str], spec: str, first: int | None) -> None:
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:1000])
    got = list(Follower([str(p)], start=StartAt.parse_n(spec)).lines())
    if first is None:
        assert got == []
    else:
        assert texts(got) == corpus_lines[first - 1:1000]
        assert got[0].lineno == first


@pytest.mark.parametrize("compress", ["gzip", "bzip2", "xz"])
def test_compressed_file_is_shown_decompressed_and_not_followed(tmp_path: Path, corpus_lines: list[str],
                                                                 compress: str) -> None:
    """``tail mail.log.2.gz`` shows what ``zcat mail.log.2.gz | tail`` shows (it showed the
    compressed bytes as unparsed lines); with -F it is shown once, since it cannot grow."""
    import subprocess

    p = tmp_path / "mail.log.2"
    write(p, corpus_lines[:1000])
    subprocess.run([compress, "-k", str(p)], check=True)
    packed = next(q for q in tmp_path.iterdir() if q.name != p.name)
    for start, expected in ((StartAt(last=5), corpus_lines[995:1000]),
                            (StartAt.parse_n("+990"), corpus_lines[989:1000])):
        f = Follower([str(packed)], start=start)
        got = list(f.history()) + list(f.lines())
        assert texts(got) == expected
        assert got[0].lineno == 1000 - len(expected) + 1 and {g.source for g in got} == {str(packed)}
    notices: list[str] = []
    f = Follower([str(packed), str(p)], follow=True, by_name=True, start=StartAt(last=2), notice=notices.append)
    got = list(f.history()) + drain(f, 2)
    assert texts(got) == corpus_lines[998:1000] * 2
    assert notices == [f"{packed} is compressed (finished rotated history): shown, not followed"]
    f.close()


def test_parse_n_rejects_nonsense() -> None:
    with pytest.raises(UsageError, match="-n"):
        StartAt.parse_n("ten")
    assert StartAt.parse_n("-5") == StartAt(last=5)


def test_unterminated_last_line_counts_as_a_line_when_not_following(tmp_path: Path) -> None:
    p = tmp_path / "mail.log"
    p.write_bytes(b"a\nb\nc")
    assert texts(list(Follower([str(p)], start=StartAt(last=2)).lines())) == ["b", "c"]
    assert offset_of_last(os.open(p, os.O_RDONLY), 5, 2) == 2


def test_missing_file_without_follow_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(Follower([str(tmp_path / "nope.log")]).lines())


def test_hostile_bytes_read_as_the_core_reader_reads_them(tmp_path: Path) -> None:
    from maillens.sources import read_lines

    p = tmp_path / "mail.log"
    blob = (b"\xff\xfe\x00bad utf8 \x1b]0;title\x07\r\n" + b"x" * (3 << 20) + b"\nend\n"
            + b"y" * ((1 << 20) + 5) + b"\n\n" + b"z" * (2 << 20))
    p.write_bytes(blob)
    got = list(Follower([str(p)], start=StartAt.parse_n("+1")).lines())
    assert got[0].text == "\ufffd\ufffd\x00bad utf8 \x1b]0;title\x07"
    assert [(g.lineno, g.text) for g in got] == [(x.lineno, x.text) for x in read_lines([str(p)])]
    with Follower([str(p)], follow=True, start=StartAt.parse_n("+1")) as f:  # streaming: the same
        assert [g.text for g in drain(f, 6)] == [g.text for g in got]  # an overlong line is not held


def test_since_bisects_to_the_first_matching_line(tmp_path: Path, corpus_lines: list[str]) -> None:
    from datetime import datetime, timezone

    from maillens.envelope import YearInference, parse_envelope

    def line_time(text: str):  # type: ignore[no-untyped-def]
        env = parse_envelope(text, YearInference(reference=datetime(2026, 11, 25, tzinfo=timezone.utc),
                                                 tz=timezone.utc))
        return env.ts if env else None

    p = tmp_path / "mail.log"
    write(p, corpus_lines)
    stamps = [line_time(t) for t in corpus_lines]
    for since in (datetime(2026, 11, 9, 15, 30, tzinfo=timezone.utc),
                  datetime(2026, 11, 10, 7, 20, 5, tzinfo=timezone.utc),
                  datetime(2026, 11, 1, tzinfo=timezone.utc)):
        first = next(i for i, ts in enumerate(stamps) if ts is not None and ts >= since)
        fd = os.open(p, os.O_RDONLY)
        off = offset_of_time(fd, p.stat().st_size, since, line_time)
        assert count_newlines(fd, off) == first
        os.close(fd)
    late = datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert offset_of_time(os.open(p, os.O_RDONLY), p.stat().st_size, late, line_time) == p.stat().st_size


def test_parse_since() -> None:
    from datetime import datetime, timedelta, timezone

    from maillens.cli.tail_cmd import parse_since

    now = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2026-11-09T08:00+00:00", now) == datetime(2026, 11, 9, 8, tzinfo=timezone.utc)
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterdayish", now)


# -- following ----------------------------------------------------------------------------------


@pytest.mark.parametrize("inotify", MODES)
def test_partial_line_is_held_until_complete(tmp_path: Path, corpus_lines: list[str], inotify: bool) -> None:
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:3])
    with Follower([str(p)], follow=True, by_name=True, start=StartAt(last=0), use_inotify=inotify) as f:
        assert f.uses_inotify == inotify
        assert f.poll(0.1) == []
        line = corpus_lines[3]
        with open(p, "a") as fh:
            fh.write(line[:20])
        assert f.poll(0.3) == []
        with open(p, "a") as fh:
            fh.write(line[20:] + "\n")
        assert f.poll(2) == [TailLine(str(p), 4, line)]


@pytest.mark.parametrize("inotify", MODES)
def test_rename_and_create_loses_and_repeats_nothing(tmp_path: Path, corpus_lines: list[str],
                                                     inotify: bool) -> None:
    """rsyslog keeps writing to the renamed file until it reopens; those lines come first."""
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:100])
    with Follower([str(p)], follow=True, by_name=True, start=StartAt.parse_n("+1"), use_inotify=inotify,
                  drain_grace=1.0) as f:
        got = drain(f, 100)
        writer = open(p, "a")
        writer.write("\n".join(corpus_lines[100:150]) + "\n")
        writer.flush()
        os.rename(p, tmp_path / "mail.log.1")
        writer.write("\n".join(corpus_lines[150:160]) + "\n")  # the writer has not reopened yet
        writer.flush()
        time.sleep(0.3)
        writer.write("\n".join(corpus_lines[160:170]) + "\n")
        writer.close()  # "HUP": reopen by name
        write(p, corpus_lines[170:300])
        got += drain(f, 200)
    assert texts(got) == corpus_lines[:300]
    assert [g.lineno for g in got] == list(range(1, 171)) + list(range(1, 131))


@pytest.mark.parametrize("inotify", MODES)
def test_copytruncate_recovers_unread_lines_from_the_copy(tmp_path: Path, corpus_lines: list[str],
                                                          inotify: bool) -> None:
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:100])
    (tmp_path / "mail.log.1").write_text("older rotation\n")
    with Follower([str(p)], follow=True, by_name=True, start=StartAt.parse_n("+1"), use_inotify=inotify) as f:
        got = drain(f, 100)
        write(p, corpus_lines[100:140])  # written, not yet read when logrotate strikes
        os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
        shutil.copyfile(p, tmp_path / "mail.log.1")
        os.truncate(p, 0)
        write(p, corpus_lines[140:400])  # refilled past our old offset before we look
        got += drain(f, 300)
    assert texts(got) == corpus_lines[:400]


@pytest.mark.parametrize("inotify", MODES)
def test_plain_truncation_restarts_at_zero(tmp_path: Path, corpus_lines: list[str], inotify: bool) -> None:
    p = tmp_path / "mail.log"
    write(p, corpus_lines[:10])
    notices: list[str] = []
    with Follower([str(p)], follow=True, by_name=True, start=StartAt.parse_n("+1"), use_inotify=inotify,
                  notice=notices.append) as f:
        got = drain(f, 10)
        os.truncate(p, 0)
        write(p, corpus_lines[10:12])
        got += drain(f, 2)
    assert texts(got) == corpus_lines[:12]
    assert any("truncated" in n for n in notices)


@pytest.mark.parametrize("inotify", MODES)
def test_missing_file_is_waited_for(tmp_path: Path, corpus_lines: list[str], inotify: bool) -> None:
    p = tmp_path / "mail.log"
    notices: list[str] = []
    with Follower([str(p)], follow=True, by_name=True, use_inotify=inotify, notice=notices.append) as f:
        assert f.poll(0.2) == []
        write(p, corpus_lines[:5])
        got = drain(f, 5)
    assert texts(got) == corpus_lines[:5]
    assert "waiting" in notices[0] and "appeared" in notices[-1]


def test_several_files_keep_their_own_sources(tmp_path: Path, corpus_lines: list[str]) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write(a, corpus_lines[:3])
    write(b, corpus_lines[3:5])
    with Follower([str(a), str(b)], follow=True, by_name=True, start=StartAt(last=1)) as f:
        first = drain(f, 2)
        write(b, corpus_lines[5:6])
        write(a, corpus_lines[6:7])
        more = drain(f, 2)
    assert [(x.source, x.text) for x in first] == [(str(a), corpus_lines[2]), (str(b), corpus_lines[4])]
    assert sorted((x.source, x.lineno) for x in more) == [(str(a), 4), (str(b), 3)]


def test_stdin_pipe_is_streamed_when_following(corpus_lines: list[str]) -> None:
    r, w = os.pipe()
    with Follower(["-"], follow=True, stdin_fd=r) as f:
        os.write(w, ("\n".join(corpus_lines[:3]) + "\n" + corpus_lines[3][:10]).encode())
        got = drain(f, 3)
        assert texts(got) == corpus_lines[:3]
        os.write(w, (corpus_lines[3][10:] + "\n").encode())
        os.close(w)
        got = drain(f, 1)
        assert texts(got) == [corpus_lines[3]]
        assert f.done
    os.close(r)


def test_stdin_without_follow_keeps_the_last_n(corpus_lines: list[str]) -> None:
    r, w = os.pipe()
    os.write(w, ("\n".join(corpus_lines[:50]) + "\n").encode())
    os.close(w)
    got = list(Follower(["-"], start=StartAt(last=4), stdin_fd=r).lines())
    os.close(r)
    assert texts(got) == corpus_lines[46:50]


def test_rotation_storm_against_a_live_writer(tmp_path: Path, corpus_lines: list[str]) -> None:
    """A writer appends 6,000 real lines fast while the file is rotated both ways, repeatedly."""
    p = tmp_path / "mail.log"
    p.touch()
    lines = corpus_lines[:6000]
    done = threading.Event()

    def writer() -> None:
        fh = open(p, "a")
        for i, line in enumerate(lines, 1):
            fh.write(line + "\n")
            fh.flush()
            if i % 1000 == 0:
                if (i // 1000) % 2:  # rename + create, the writer reopening a moment later
                    for k in range(9, 0, -1):
                        if (tmp_path / f"mail.log.{k}").exists():
                            os.rename(tmp_path / f"mail.log.{k}", tmp_path / f"mail.log.{k + 1}")
                    os.rename(p, tmp_path / "mail.log.1")
                    time.sleep(0.01)
                    fh.close()
                    fh = open(p, "a")
                else:  # copytruncate; logrotate's own loss window is closed by pausing the writer
                    for k in range(9, 0, -1):
                        if (tmp_path / f"mail.log.{k}").exists():
                            os.rename(tmp_path / f"mail.log.{k}", tmp_path / f"mail.log.{k + 1}")
                    shutil.copyfile(p, tmp_path / "mail.log.1")
                    os.truncate(p, 0)
            if i % 50 == 0:
                time.sleep(0.002)
        fh.close()
        done.set()

    with Follower([str(p)], follow=True, by_name=True, start=StartAt.parse_n("+1"), drain_grace=1.0) as f:
        t = threading.Thread(target=writer)
        t.start()
        got: list[TailLine] = []
        deadline = time.monotonic() + 60
        while (len(got) < len(lines) or not done.is_set()) and time.monotonic() < deadline:
            got += f.poll(0.2)
        got += f.poll(0.3)
        t.join()
    assert len(got) == len(lines)
    assert texts(got) == lines


@pytest.mark.parametrize("inotify", MODES)
def test_idle_follow_uses_under_one_percent_cpu(tmp_path: Path, inotify: bool) -> None:
    p = tmp_path / "mail.log"
    p.write_text("")
    with Follower([str(p)], follow=True, by_name=True, use_inotify=inotify) as f:
        f.poll(0.05)
        wall, cpu = time.monotonic(), time.process_time()
        while time.monotonic() - wall < 3.0:
            f.poll(1.0)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
    assert used < 0.01, f"idle follow loop used {used:.2%} CPU"
