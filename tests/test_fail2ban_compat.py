"""maillens reads and runs fail2ban filters as the real fail2ban does (issue 2, must-shows 2 and 3).

The oracle is Debian's ``fail2ban-regex``, run (see ``tests/fail2ban_oracle.py``) as
``fail2ban-regex --raw -e utf-8 -o '<fid>\x1f<F-NAME>...\x1f<matches>\x1e' LOG FILTER``:
``-o`` gives one machine-readable record per failure and makes fail2ban-regex
decide like the daemon (first matching failregex wins); ``--raw`` keeps it from
looking names up in DNS -- it does not change what is compared, as the filters here
report addresses (and maillens never resolves); ``-e utf-8`` decodes as maillens
does.  No date flag is needed: fail2ban-regex itself switches off fail2ban's
"ignore old lines" check and accepts any year.  Each (filter, log) pair runs once;
the comparisons are line for line: the same lines, the same failure id ("host"),
and for maillens's own rule files the same value of every ``<F-NAME>`` capture.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import CORPORA, corpus_dir, require_tool
from fail2ban_oracle import (FAIL2BAN_LOG_DIRS, compare, fail2ban_regex_view, fail2ban_test_log, maillens_match,
                             maillens_view)
from maillens.errors import FilterError
from maillens.filterconf import load_filter, parsers_dir

pytestmark = pytest.mark.oracle

FILTER_D = Path("/etc/fail2ban/filter.d")
POSTFIX = str(FILTER_D / "postfix.conf")
POSTFIX_MODES = ("more", "normal", "rbl", "auth", "ddos", "errors", "extra", "aggressive")
RULE_FILES = [p for p in sorted(parsers_dir().glob("*.conf")) if load_filter(str(p)).failregex]


def _problems(problems: list[str]) -> str:
    return f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:15])


# --------------------------------------------------------------------------- must-show 2


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.stem)
def test_rule_file_matches_what_fail2ban_matches(rule_file: Path, corpus: str) -> None:
    """Every parsers/ filter: fail2ban-regex loads it and reports exactly the lines,
    failure ids and captures that ``maillens match --json`` reports, on the corpus log."""
    log = str(corpus_dir(corpus) / "maillog")
    both, problems = compare(log, str(rule_file))
    assert not problems, _problems(problems)
    if rule_file.stem != "postfix-postscreen":  # the corpus server runs no postscreen
        assert both > 0, f"{rule_file.name} matches nothing in {corpus}: the comparison would prove nothing"


def test_rfc3339_time_stamps_are_cut_out_as_fail2ban_cuts_them() -> None:
    """The RFC 3339 copy of the log: fail2ban's date templates decide what the filter sees."""
    log = str(corpus_dir("real-postfix-dev") / "maillog.rfc3339")
    for spec in (str(parsers_dir() / "postfix-reject.conf"), f"{POSTFIX}[mode=aggressive]"):
        both, problems = compare(log, spec)
        assert not problems, _problems(problems)
        assert both > 1000


DATED_LINES = [
    "Nov  9 08:41:19 mx a 192.0.2.1", "Nov 9 08:41:19 mx a 192.0.2.2",
    "2026-11-09T08:41:19.211563+00:00 mx a 192.0.2.3", "2026-11-09T08:41:19+0000 mx a 192.0.2.4",
    "2026-11-09 08:41:19,123 mx a 192.0.2.5", "Sun Jan 23 21:59:59 2005 mx a 192.0.2.6",
    "Jan 23 21:59:59.011 2005 mx a 192.0.2.7", "23/01/2005 21:59:59 mx a 192.0.2.8",
    "[31/Oct/2006:09:22:55 -0000] mx a 192.0.2.9", "1403884279 - mx a 192.0.2.10",
    "\x00\x00Nov  9 08:41:19 mx a 192.0.2.11", "\x00\x00\x00Nov  9 08:41:19 mx a 192.0.2.12",
    "<22>1 2026-11-09T08:41:19.211Z mx a 192.0.2.13", "no date at all mx a 192.0.2.14",
    "mx a at Nov  9 08:45:17 then 192.0.2.15", "Nov  9 08:41:19 mx statistics at Nov  9 08:45:17 192.0.2.16",
    "@4000000037c219bf2ef02e94 mx a 192.0.2.17", "2005/01/23 21:59:59 mx a 192.0.2.18",
    "Nov  9 08:41:19 2026 mx a 192.0.2.19", "  Nov  9 08:41:19 mx a 192.0.2.20",
]


@pytest.mark.parametrize("datepattern", [None, "{^LN-BEG}"])
def test_time_stamps_are_cut_out_where_fail2ban_cuts_them(tmp_path: Path, datepattern: str | None) -> None:
    """What is left of each line once fail2ban's date templates took the time stamp out
    (captured whole by the filter) -- syslog, RFC 3339/5424, asctime, Apache, epoch,
    TAI64N, NUL-padded, mid-line and missing stamps; defaults and {^LN-BEG}."""
    flt = tmp_path / "seen.conf"
    flt.write_text("[Definition]\nfailregex = ^<F-SEEN>.*</F-SEEN> <ADDR>$\n"
                   + (f"datepattern = {datepattern}\n" if datepattern else ""))
    log = tmp_path / "dates.log"
    log.write_text("\n".join(DATED_LINES) + "\n")
    both, problems = compare(str(log), str(flt))
    assert not problems, _problems(problems)
    assert both == len(DATED_LINES)


# --------------------------------------------------------------------------- must-show 3


def _postfix_logs() -> list[tuple[str, str]]:
    """fail2ban's test logs for postfix (``postfix*``; Debian 12 ships ``postfix``) and the corpus."""
    shipped = sorted({p.name for d in FAIL2BAN_LOG_DIRS if d.is_dir() for p in d.glob("postfix*")}) or ["postfix"]
    return [*((f"fail2ban-{n}", f"fail2ban:{n}") for n in shipped), *((c, f"corpus:{c}") for c in CORPORA)]


def _log_path(where: str) -> str:
    if where.startswith("fail2ban:"):
        return str(fail2ban_test_log(where.split(":", 1)[1]))
    return str(corpus_dir(where.split(":", 1)[1]) / "maillog")


@pytest.mark.parametrize("where", [w for _, w in _postfix_logs()], ids=[i for i, _ in _postfix_logs()])
@pytest.mark.parametrize("mode", POSTFIX_MODES)
def test_fail2ban_postfix_filter_every_mode(mode: str, where: str) -> None:
    """fail2ban's own postfix.conf, each mode, on its own test log and on the corpus."""
    require_tool("fail2ban-regex")
    if not Path(POSTFIX).is_file():
        pytest.fail(f"{POSTFIX} is missing although fail2ban is installed")
    both, problems = compare(_log_path(where), f"{POSTFIX}[mode={mode}]", with_fields=False)
    assert not problems, _problems(problems)
    assert both > 0


# --------------------------------------------------------------------------- the loader

LOADER_SPECS = [
    *(str(p) for p in RULE_FILES),
    POSTFIX, *(f"{POSTFIX}[mode={m}]" for m in POSTFIX_MODES),
    f"{POSTFIX}[mode=normal, exre-user='']",  # a parameter that is a %(var)s of the filter
    *(f"{FILTER_D}/sshd.conf[mode={m}]" for m in ("normal", "ddos", "extra", "aggressive")),
    f'{FILTER_D}/sshd.conf[mode=aggressive, publickey=invalid, __pam_auth="pam_ldap"]',
    f"{FILTER_D}/dovecot.conf", f"{FILTER_D}/dovecot.conf[mode=aggressive]",  # <lt_...> prefix, datepatterns
    f"{FILTER_D}/sendmail-reject.conf[mode=extra]",  # %(known/__prefix_line)s
    f"{FILTER_D}/asterisk.conf",  # known/ inside an [lt_journal] override
    f"{FILTER_D}/asterisk.conf[logtype=journal]",
    f"{FILTER_D}/apache-badbots.conf",  # known/ of a [Definition] option
    f"{FILTER_D}/pure-ftpd.conf", f"{FILTER_D}/mongodb-auth.conf",  # [Init] options as tags
    f"{FILTER_D}/znc-adminlog.conf", f"{FILTER_D}/monit.conf",  # <logtype> in the filter's own tags
    f"{FILTER_D}/sogo-auth.conf", f"{FILTER_D}/nsd.conf",  # {DATE} and EPOCH datepatterns
    f"{FILTER_D}/selinux-ssh.conf", f"{FILTER_D}/exim-spam.conf",
]


@pytest.mark.parametrize("spec", LOADER_SPECS, ids=lambda s: s.replace(str(FILTER_D) + "/", "").replace(
    str(parsers_dir()) + "/", "parsers/"))
def test_loader_reads_filters_as_fail2ban_does(spec: str) -> None:
    """Includes, .local, %(x)s, known/, [Init], parameters, <tags>, modes, datepattern:
    the regexes maillens compiles are the ones fail2ban-regex lists."""
    assert maillens_view(spec) == fail2ban_regex_view(spec)


STATEFUL = [("sshd", f"{FILTER_D}/sshd.conf[mode={m}]") for m in ("normal", "ddos", "extra", "aggressive")] + [
    ("dovecot", f"{FILTER_D}/dovecot.conf[mode=aggressive]"),
    ("sendmail-reject", f"{FILTER_D}/sendmail-reject.conf[mode=aggressive]"),
    ("sendmail-auth", f"{FILTER_D}/sendmail-auth.conf"),
    ("exim", f"{FILTER_D}/exim.conf[mode=aggressive]"),
]


@pytest.mark.parametrize(("log", "spec"), STATEFUL, ids=lambda v: v.split("/")[-1] if "/" in v else v)
def test_other_fail2ban_filters_on_their_own_test_logs(log: str, spec: str) -> None:
    """Beyond postfix: multi-line failure ids (sshd's <F-MLFID>, <F-NOFAIL>,
    <F-MLFFORGET>), ignoreregex and prefregex merging give fail2ban's answers."""
    both, problems = compare(str(fail2ban_test_log(log)), spec, with_fields=False)
    assert not problems, _problems(problems)
    assert both > 0


@pytest.mark.parametrize("name", ["cyrus-imap", "portsentry", "proftpd", "nginx-bad-request", "nginx-botsearch"])
def test_a_last_line_without_newline_is_not_tested_as_fail2ban_regex_leaves_it(name: str) -> None:
    """Debian's test logs for these filters end without a newline: fail2ban-regex does not
    test that line (it waits for its end); neither does ``maillens match``, and it says so."""
    import subprocess

    from click.testing import CliRunner

    from maillens.cli.main import cli

    log = fail2ban_test_log(name)
    assert not log.read_bytes().endswith(b"\n")
    proc = subprocess.run([require_tool("fail2ban-regex"), str(log), str(FILTER_D / f"{name}.conf")],
                          capture_output=True, text=True, timeout=300)
    theirs = int(re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", proc.stdout, re.M).group(1))
    result = CliRunner().invoke(cli, ["match", "--filter", str(FILTER_D / f"{name}.conf"), str(log)])
    assert result.exit_code == 0, result.output
    assert f"{theirs} lines matched " in result.stderr
    assert f"the last line of {log} has no newline: not tested" in result.stderr


def test_local_overrides(tmp_path: Path) -> None:
    """A filter.d with .local files and a .d directory: fail2ban and maillens read the same filter."""
    require_tool("fail2ban-regex")
    fdir = tmp_path / "filter.d"
    fdir.mkdir()
    for name in ("common.conf", "postfix.conf"):
        shutil.copy(FILTER_D / name, fdir / name)
    (fdir / "common.local").write_text("[DEFAULT]\n__hostname = mx\\d*\n")
    (fdir / "postfix.local").write_text(
        "[Definition]\n"
        "mdre-rbl = %(known/mdre-rbl)s\n"
        "           ^%(_pref)s from [^[]*\\[<HOST>\\]%(_port)s: 421 4\\.7\\.0 \n"
        "[Init]\nmode = rbl\n")
    (fdir / "postfix.d").mkdir()
    (fdir / "postfix.d" / "10-ignore.conf").write_text(
        "[Definition]\nignoreregex = ^[A-Z]{4} from \\S*\\[192\\.0\\.2\\.99\\]\n")
    spec = str(fdir / "postfix.conf")
    ours = maillens_view(spec)
    assert ours == fail2ban_regex_view(spec)
    # the overrides took effect: [Init] mode, known/ plus one regex, the .d ignoreregex, common.local
    assert len(ours["failregex"]) == 2 and ours["failregex"][1].startswith("^[A-Z]{4} from ")  # type: ignore[index]
    assert ours["ignoreregex"] == ["^[A-Z]{4} from \\S*\\[192\\.0\\.2\\.99\\]"]
    assert "(?:mx\\d*\\s+)?" in str(ours["prefregex"])
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov  9 08:41:22 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from a.example[192.0.2.1]: 554 5.7.1 Service"
        " unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; from=<a@b.example> to=<c@d.example>"
        " proto=ESMTP helo=<a>\n"
        "Nov  9 08:41:23 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from b.example[192.0.2.2]: 421 4.7.0 busy;"
        " from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<b>\n"
        "Nov  9 08:41:24 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from c.example[192.0.2.99]: 554 5.7.1 Service"
        " unavailable; Client host [192.0.2.99] blocked using zen.spamhaus.org; from=<a@b.example> to=<c@d.example>"
        " proto=ESMTP helo=<c>\n"
        "Nov  9 08:41:25 gw postfix/smtpd[1]: NOQUEUE: reject: RCPT from d.example[192.0.2.4]: 421 4.7.0 busy;"
        " from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<d>\n")
    both, problems = compare(str(log), spec, with_fields=False)
    assert not problems, _problems(problems)
    assert sorted(m["host"] for m in maillens_match(str(log), spec).values()) == ["192.0.2.1", "192.0.2.2"]
    assert both == 2


def test_bad_filter_files_are_one_plain_error(tmp_path: Path) -> None:
    """What fail2ban refuses, maillens refuses with a message naming the file."""
    bad = tmp_path / "bad.conf"
    bad.write_text("[Definition]\nfailregex = ^x <HOST>\nfailregex = ^y <HOST>\n")
    with pytest.raises(FilterError, match="bad.conf"):
        load_filter(str(bad))
    noid = tmp_path / "noid.conf"
    noid.write_text("[Definition]\nfailregex = ^no failure id here$\n")
    with pytest.raises(FilterError, match="no <HOST>"):
        load_filter(str(noid))
    loop = tmp_path / "loop.conf"
    loop.write_text("[Definition]\na = <b>\nb = <a>\nfailregex = <a> <HOST>\n")
    with pytest.raises(FilterError):
        load_filter(str(loop))


# --------------------------------------------------------------------------- lint

_ADDRESS_TAG = r"<(?:HOST|ADDR|IP4|IP6|DNS|SUBNET|F-(?:IP4|IP6|ADDR|DNS|SUBNET)/)>"
_LITERAL = r"(?:\\.|[^\\(\[\]{}|*+?.^$<]|</?F-[A-Z0-9_\-]+>)"
#: a greedy ``.*``/``.+`` followed only by literal text (and F-tags) up to an address tag
GREEDY_BEFORE_ADDRESS = re.compile(r"(?<!\\)\.[*+](?![?+])" + _LITERAL + "*" + _ADDRESS_TAG)


@pytest.mark.parametrize(("regex", "flagged"), [
    (r"^.* from <HOST>", True),
    (r"^Failed \S+ for .* from <HOST> port \d+", True),
    (r"^user=<F-USER>.*</F-USER> rhost=<HOST>", True),
    (r"^(?:.* )from \[<ADDR>\]", True),
    (r"^x: .+ \[<ADDR>\]", True),
    (r"^Failed \S+ for .*? from <HOST>", False),
    (r"^reject: \S+ from [^\[]*\[<ADDR>\]", False),
    (r"^from <HOST>: .*$", False),
    (r"^a\.* from <HOST>", False),
])
def test_the_lint_sees_the_hole(regex: str, flagged: bool) -> None:
    assert bool(GREEDY_BEFORE_ADDRESS.search(regex)) is flagged


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.stem)
def test_no_greedy_wildcard_before_an_address(rule_file: Path) -> None:
    """fail2ban's known injection hole: a greedy ``.*`` before ``<HOST>`` lets text the
    client controls (a HELO name, an address) put someone else's IP where the filter
    takes the failure id from."""
    flt = load_filter(str(rule_file))
    for rx in [*flt.failregex, *([flt.prefregex] if flt.prefregex else [])]:
        m = GREEDY_BEFORE_ADDRESS.search(rx.text)
        assert m is None, f"{rule_file.name} failregex {rx.index + 1}: greedy {m.group()!r} before an address"
