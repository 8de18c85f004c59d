"""Reading main.cf/master.cf, checked against the real ``postconf -c DIR``.

Each syntax case writes a small main.cf (and master.cf) into a temp dir and
compares what maillens reads with what Debian's postconf prints for the same
directory: ``-h`` (value as written, logical line joined), ``-xh`` (``$name``
expanded), ``-P``/``-Px`` (master.cf ``-o`` overrides).  Token lists, which
postconf does not print, are checked against the split Postfix documents
(commas and whitespace separate, ``{ }`` groups one item).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require_tool
from maillens.errors import ConfigError
from maillens.postconf import expand, load_postfix_config, split_list

pytestmark = pytest.mark.oracle


def postconf(directory: Path, *args: str) -> str:
    exe = require_tool("postconf", reason="Debian package postfix")
    for name in ("main.cf", "master.cf"):  # postconf waits while a file is under 2 s old
        path = directory / name
        if path.exists() and path.stat().st_mtime > time.time() - 5:
            os.utime(path, (time.time() - 60, time.time() - 60))
    done = subprocess.run([exe, "-c", str(directory), *args], capture_output=True, text=True, check=True)
    return done.stdout


def postconf_values(directory: Path, *args: str) -> dict[str, str]:
    """``name = value`` lines of postconf output → dict."""
    out: dict[str, str] = {}
    for line in postconf(directory, *args).splitlines():
        name, _, value = line.partition(" =")
        out[name.strip()] = value.strip()
    return out


def write_config(tmp_path: Path, main_cf: str, master_cf: str | None = None) -> Path:
    (tmp_path / "main.cf").write_text(main_cf)
    if master_cf is not None:
        (tmp_path / "master.cf").write_text(master_cf)
    return tmp_path


def words(value: str | None) -> str:
    """postconf prints a value's words separated by single spaces (pcf_print_line)."""
    return " ".join((value or "").split())


def assert_same_as_postconf(directory: Path, names: list[str]) -> None:
    """Raw (-h) and expanded (-xh) values of ``names`` equal postconf's."""
    cfg = load_postfix_config(directory)
    raw = postconf(directory, "-h", *names).splitlines()
    expanded = postconf(directory, "-xh", *names).splitlines()
    assert [words(cfg.parameter(n, expand_vars=False)) for n in names] == raw
    assert [words(cfg.parameter(n)) for n in names] == expanded


def test_continuation_lines(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "smtpd_client_restrictions = permit_mynetworks,\n"
        "    reject_unknown_client_hostname,\n"
        "\treject_rbl_client zen.spamhaus.org\n"
        "smtpd_helo_required = yes\n"
        "mydestination = a.example\n"
        "  b.example\n"
        "\n"
        "  c.example\n"  # a blank line does not end a logical line
    ))
    assert_same_as_postconf(d, ["smtpd_client_restrictions", "smtpd_helo_required", "mydestination"])
    cfg = load_postfix_config(d)
    assert [r.name for r in cfg.restrictions("smtp", "client")] == [
        "permit_mynetworks", "reject_unknown_client_hostname", "reject_rbl_client",
    ]
    assert cfg.mydestination == ["a.example", "b.example", "c.example"]


def test_comments(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "# a comment\n"
        "   # an indented comment is still a comment\n"
        "smtpd_client_restrictions = permit_mynetworks,\n"
        "#   reject_rbl_client commented.out.example,\n"
        "    reject_rbl_client zen.spamhaus.org\n"
        "smtpd_banner = $myhostname ESMTP # not a comment: part of the value\n"
        "myhostname = mx.example.org\n"
    ))
    assert_same_as_postconf(d, ["smtpd_client_restrictions", "smtpd_banner", "myhostname"])
    cfg = load_postfix_config(d)
    assert [z.domain for z in cfg.rbl_zones()] == ["zen.spamhaus.org"]
    assert cfg.parameter("smtpd_banner") == "mx.example.org ESMTP # not a comment: part of the value"


def test_variable_expansion(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "compatibility_level = 3.6\n"
        "myhostname = mx.example.org\n"
        "mydomain = example.org\n"
        "smtpd_banner = $myhostname ${mydomain} $(mydomain) ${mydomain?set} ${nosuch?set}"
        " ${nosuch:unset} ${mydomain:unset} ${mydomain?{ braced }} ${nosuch?{a}:{b}} $$literal\n"
        "mynetworks = 192.0.2.0/24, $myhostname\n"
        "mydestination = $myhostname, localhost.$mydomain, localhost\n"
        "alias_maps = hash:$config_directory/aliases\n"
    ))
    assert_same_as_postconf(d, ["smtpd_banner", "mynetworks", "mydestination", "alias_maps"])
    # defaults that are expressions of compatibility_level
    assert_same_as_postconf(d, ["relay_domains", "smtpd_relay_restrictions", "syslog_name", "mynetworks_style"])
    low = write_config(tmp_path / "low", "") if (tmp_path / "low").mkdir() is None else None
    assert low is not None
    (low / "main.cf").write_text("compatibility_level = 0\nmyhostname = mx.example.org\nmydomain = example.org\n")
    assert_same_as_postconf(low, ["relay_domains", "smtpd_relay_restrictions", "mydestination"])


def test_expansion_never_loops() -> None:
    assert expand("$a", {"a": "$b", "b": "$a x"}).startswith("$")  # stops, does not hang


def test_commas_and_whitespace_separate(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "smtpd_recipient_restrictions = permit_mynetworks,reject_unauth_destination , "
        "reject_unlisted_recipient\treject_non_fqdn_recipient,,check_recipient_access hash:/etc/postfix/rcpt\n"
        "mynetworks = 127.0.0.0/8,[::1]/128 192.0.2.0/24\n"
    ))
    assert_same_as_postconf(d, ["smtpd_recipient_restrictions", "mynetworks"])
    cfg = load_postfix_config(d)
    assert [(r.position, r.name, r.argument) for r in cfg.restrictions("smtp", "recipient")] == [
        (1, "permit_mynetworks", None),
        (2, "reject_unauth_destination", None),
        (3, "reject_unlisted_recipient", None),
        (4, "reject_non_fqdn_recipient", None),
        (5, "check_recipient_access", "hash:/etc/postfix/rcpt"),
    ]
    assert cfg.mynetworks == ["127.0.0.0/8", "[::1]/128", "192.0.2.0/24"]
    assert [str(n) for n in cfg.mynetworks_networks()] == ["127.0.0.0/8", "::1/128", "192.0.2.0/24"]


def test_brace_grouping(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "smtpd_sender_restrictions = reject_non_fqdn_sender,\n"
        "    check_policy_service { inet:127.0.0.1:10023, timeout=10s, default_action=DUNNO },\n"
        "    reject_unknown_sender_domain\n"
    ))
    assert_same_as_postconf(d, ["smtpd_sender_restrictions"])
    assert split_list(postconf(d, "-xh", "smtpd_sender_restrictions")) == [
        "reject_non_fqdn_sender",
        "check_policy_service",
        "{ inet:127.0.0.1:10023, timeout=10s, default_action=DUNNO }",
        "reject_unknown_sender_domain",
    ]
    cfg = load_postfix_config(d)
    policy = cfg.policy_services()
    assert [(p.stage, p.position, p.argument) for p in policy] == [
        ("sender", 2, "{ inet:127.0.0.1:10023, timeout=10s, default_action=DUNNO }")
    ]


MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/$service_name
  -o smtpd_sasl_auth_enable=yes
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -o smtpd_helo_restrictions=
  -o smtpd_recipient_restrictions=$mua_recipient
# a comment between services
smtps     inet  n       -       y       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       y       60      1       pickup
"""


def test_master_cf_overrides(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "smtpd_client_restrictions = permit_mynetworks, reject_unknown_client_hostname\n"
        "smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
        "mua_recipient = permit_sasl_authenticated, reject\n"
    ), MASTER_CF)
    cfg = load_postfix_config(d)
    raw = postconf_values(d, "-P")
    expanded = postconf_values(d, "-Px")
    ours_raw = {f"{s.key}/{n}": v for s in cfg.services for n, v in s.overrides.items()}
    assert ours_raw == raw
    assert {k: cfg.parameter(k.split("/")[2], k.split("/")[0]) for k in expanded} == expanded
    assert [s.name for s in cfg.smtpd_services()] == ["smtp", "submission", "smtps"]
    assert [r.name for r in cfg.restrictions("submission", "client")] == ["permit_sasl_authenticated", "reject"]
    assert cfg.restrictions("submission", "helo") == []
    assert [r.name for r in cfg.restrictions("smtps", "client")] == ["permit_mynetworks", "reject_unknown_client_hostname"]
    assert [r.name for r in cfg.restrictions("submission", "recipient")] == ["permit_sasl_authenticated", "reject"]
    assert cfg.service_for_program("postfix/submission/smtpd") == "submission"
    assert cfg.service_for_program("postfix/smtps/smtpd") == "smtps"
    assert cfg.service_for_program("postfix/smtpd") == "smtp"
    assert cfg.service_for_program("postfix/other/smtpd") is None


def test_corpus_config_equals_postconf(any_corpus: Path) -> None:
    """Every parameter of the corpus main.cf and every -o override, as postconf reads them."""
    d = any_corpus / "config"
    cfg = load_postfix_config(d)
    explicit = postconf_values(d, "-n")
    explicit.pop("config_directory", None)  # postconf -c adds it
    assert {n: cfg.parameter(n, expand_vars=False) for n in explicit} == explicit
    assert set(cfg.main) == set(explicit)
    assert {f"{s.key}/{n}": v for s in cfg.services for n, v in s.overrides.items()} == postconf_values(d, "-P")
    # the shipped postconf -n of the server agrees too
    shipped = dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
                   for line in (d / "postconf-n.txt").read_text().splitlines() if line.strip())
    assert {n: cfg.parameter(n, expand_vars=False) for n in shipped} == shipped


def test_corpus_restriction_model(dev_corpus: Path) -> None:
    cfg = load_postfix_config(dev_corpus / "config")
    client = cfg.restrictions("smtp", "client")
    rbl = [r for r in client if r.name == "reject_rbl_client"]
    assert [r.argument for r in rbl][-1] == "dnsbl.sorbs.net" and rbl[-1].warn_only
    assert not any(r.warn_only for r in rbl[:-1])
    helo = cfg.restrictions("smtp", "helo")
    # a bare regexp: table in the helo list is check_helo_access (Postfix's default there)
    assert (helo[-1].name, helo[-1].argument) == ("check_helo_access", "regexp:/etc/postfix/access.helo.regexp")
    maps = {(m.restriction, m.path) for m in cfg.access_maps()}
    assert maps == {
        ("check_client_access", "/etc/postfix/access.client"),
        ("check_helo_access", "/etc/postfix/access.helo.regexp"),
        ("check_sender_access", "/etc/postfix/access.sender"),
    }
    for m in cfg.access_maps():  # maps are found in the copied directory
        assert cfg.locate(m.path) == dev_corpus / "config" / Path(m.path).name
    assert cfg.mydestination == postconf(dev_corpus / "config", "-xh", "mydestination").replace(",", " ").split()
    assert cfg.delay_reject("smtp") is True
    assert cfg.reply_codes()["unknown_client_reject_code"] == postconf(
        dev_corpus / "config", "-h", "unknown_client_reject_code").strip()
    assert cfg.syslog_name("submission") == "postfix/submission"


def test_reply_filters_and_weights(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "smtpd_client_restrictions = reject_rbl_client zen.spamhaus.org=127.0.0.[2..11],\n"
        "  reject_rhsbl_sender dbl.spamhaus.org=127.0.1.[2;4..6], permit_dnswl_client list.dnswl.org\n"
        "postscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..11]*3, bl.spamcop.net*2,\n"
        "  list.dnswl.org=127.0.[0..255].[1..3]*-5, b.barracudacentral.org\n"
    ))
    assert_same_as_postconf(d, ["smtpd_client_restrictions", "postscreen_dnsbl_sites"])
    zones = [(z.domain, z.kind, z.restriction, z.filter_text, z.weight) for z in load_postfix_config(d).rbl_zones()]
    assert zones == [
        ("zen.spamhaus.org", "rbl", "reject_rbl_client", "127.0.0.[2..11]", None),
        ("dbl.spamhaus.org", "rhsbl", "reject_rhsbl_sender", "127.0.1.[2;4..6]", None),
        ("list.dnswl.org", "dnswl", "permit_dnswl_client", "", None),
        ("zen.spamhaus.org", "rbl", "postscreen_dnsbl_sites", "127.0.0.[2..11]", 3),
        ("bl.spamcop.net", "rbl", "postscreen_dnsbl_sites", "", 2),
        ("list.dnswl.org", "dnswl", "postscreen_dnsbl_sites", "127.0.[0..255].[1..3]", -5),
        ("b.barracudacentral.org", "rbl", "postscreen_dnsbl_sites", "", 1),
    ]


def test_missing_main_cf_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no main.cf in .*--postfix-config"):
        load_postfix_config(tmp_path)


def test_hostile_input_does_not_crash(tmp_path: Path) -> None:
    d = write_config(tmp_path, (
        "no equals sign here\n= value without name\nsmtpd_banner = ${unterminated\n"
        "smtpd_client_restrictions = reject_rbl_client\n"  # argument missing at the end
        "mydestination = ${{$compatibility_level} <level {2} ? {x}\n"
        "\x00\xff binary = junk\n"
    ), "smtp inet n - y\n  -o\nbad line\nsmtp inet n - y - - smtpd -o novalue\n")
    cfg = load_postfix_config(d)
    assert len(cfg.warnings) >= 4
    assert [r.name for r in cfg.restrictions("smtp", "client")] == ["reject_rbl_client"]
    assert cfg.parameter("smtpd_banner") is not None
    cfg.to_dict()


def test_local_postfix_through_postconf(tmp_path: Path, dev_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a directory maillens asks the local Postfix (postconf -n/-d/-Mf): same model.

    MAIL_CONFIG points the real postconf at a copy of the corpus configuration.
    """
    exe = require_tool("postconf", reason="Debian package postfix")
    for name in ("main.cf", "master.cf"):
        (tmp_path / name).write_text((dev_corpus / "config" / name).read_text())
        os.utime(tmp_path / name, (time.time() - 60, time.time() - 60))  # postconf waits on fresh files
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
    via_postconf = load_postfix_config(postconf=exe)
    direct = load_postfix_config(tmp_path)
    assert via_postconf.source == f"{exe} -n"
    assert [r.to_dict() for r in via_postconf.all_restrictions()] == [r.to_dict() for r in direct.all_restrictions()]
    assert [(s.key, dict(s.overrides)) for s in via_postconf.services] == [
        (s.key, dict(s.overrides)) for s in direct.services
    ]
    assert via_postconf.rbl_zones() == direct.rbl_zones()
    assert via_postconf.mynetworks == postconf(tmp_path, "-xh", "mynetworks").split()
    # defaults come from postconf -d: what this Postfix really uses
    assert via_postconf.parameter("smtpd_reject_unlisted_recipient") == postconf(
        tmp_path, "-xh", "smtpd_reject_unlisted_recipient").strip()
    assert via_postconf.locate("/etc/postfix/access.client") is None  # not copied: honest None
