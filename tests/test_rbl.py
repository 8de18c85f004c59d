"""DNS list health against a real authoritative DNS server (dnslib) on 127.0.0.1.

The server carries one zone per situation ``maillens rbl check`` must tell
apart; the configuration under test is a main.cf naming those zones, so the
whole path (main.cf → zones → DNS → verdict → CLI output) is exercised.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from maillens import rbl
from maillens.cli.main import cli
from maillens.rbl import ReplyFilter, parse_nameserver, parse_zone_spec

SLOW_SECONDS = 1.5


class ListResolver(BaseResolver):
    """Authoritative answers for the test zones; each zone plays one failure mode."""

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        listed = {
            # alive: RFC 5782 test points (127.0.0.2 listed, 127.0.0.1 not)
            "2.0.0.127.live.test": "127.0.0.2",
            "2.0.0.127.filtered.test": "127.0.0.2",
            # rhsbl alive: 'test' listed, 'invalid' not
            "test.rhs-live.test": "127.0.0.2",
            # documented extra test points: zen lacks 127.0.0.4, sbl-xbl has it
            "2.0.0.127.zen.spamhaus.org": "127.0.0.2",
            "10.0.0.127.zen.spamhaus.org": "127.0.0.10",
            "2.0.0.127.sbl-xbl.spamhaus.org": "127.0.0.2",
            "4.0.0.127.sbl-xbl.spamhaus.org": "127.0.0.4",
        }
        if qname.endswith(".everything.test") or qname.endswith(".rhs-everything.test"):
            self._a(reply, request, "127.0.0.2")
        elif qname.endswith(".openresolver.test"):
            self._a(reply, request, "127.255.255.254")
        elif qname.endswith(".refused.test"):
            reply.header.rcode = RCODE.REFUSED
        elif qname.endswith(".servfail.test"):
            reply.header.rcode = RCODE.SERVFAIL
        elif qname.endswith(".slow.test"):
            time.sleep(SLOW_SECONDS)  # longer than the client's timeout
            reply.header.rcode = RCODE.NXDOMAIN
        elif qname in listed:
            self._a(reply, request, listed[qname])
        else:  # includes every name under dead.test
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    @staticmethod
    def _a(reply, request, address: str) -> None:  # type: ignore[no-untyped-def]
        if request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    server = DNSServer(ListResolver(), address="127.0.0.1", port=0, tcp=False,
                       logger=DNSLogger(logf=lambda _line: None))
    server.start_thread()
    try:
        yield server.server.server_address[1]
    finally:
        server.stop()


MAIN_CF = """\
compatibility_level = 3.6
smtpd_client_restrictions = permit_mynetworks,
    reject_rbl_client live.test,
    reject_rbl_client dead.test,
    reject_rbl_client everything.test
    reject_rbl_client openresolver.test, reject_rbl_client refused.test,
    reject_rbl_client servfail.test,
    reject_rbl_client filtered.test=127.0.0.[3..11]
smtpd_sender_restrictions = reject_rhsbl_sender rhs-live.test,
    warn_if_reject reject_rhsbl_sender rhs-everything.test
postscreen_dnsbl_sites = slow.test*2
"""

EXPECTED = {
    "live.test": "alive",
    "dead.test": "dead",
    "everything.test": "lists_everything",
    "openresolver.test": "refused",
    "refused.test": "refused",
    "servfail.test": "dead",
    "filtered.test": "alive",
    "rhs-live.test": "alive",
    "rhs-everything.test": "lists_everything",
    "slow.test": "dead",
}


def _run(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_rbl_check_classifies_each_zone(tmp_path: Path, dns_port: int) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    result = _run(["rbl", "check", "--postfix-config", str(tmp_path), "--nameserver", f"127.0.0.1:{dns_port}",
                   "--timeout", "0.5", "--json"])
    assert result.exit_code == 1, result.output  # some zones are unhealthy
    verdicts = {z["zone"]: z for z in json.loads(result.output)}
    assert {z: v["status"] for z, v in verdicts.items()} == EXPECTED
    assert "127.255.255.254" in verdicts["openresolver.test"]["reason"]
    assert "open resolver" in verdicts["openresolver.test"]["reason"]
    assert "REFUSED" in verdicts["refused.test"]["reason"]
    assert "SERVFAIL" in verdicts["servfail.test"]["reason"]
    assert "timeout" in verdicts["slow.test"]["reason"]
    assert "NXDOMAIN" in verdicts["dead.test"]["reason"]
    # the reply filter excludes the test answer: still alive, but said
    assert "reply filter 127.0.0.[3..11]" in verdicts["filtered.test"]["reason"]
    assert verdicts["filtered.test"]["filter"] == "127.0.0.[3..11]"
    assert verdicts["slow.test"]["weight"] == 2 and verdicts["slow.test"]["restriction"] == "postscreen_dnsbl_sites"
    # the probes asked the standard test points, with timings
    live = verdicts["live.test"]["probes"]
    assert [(p["qname"], p["answers"]) for p in live] == [
        ("2.0.0.127.live.test", ["127.0.0.2"]),
        ("1.0.0.127.live.test", []),
    ]
    assert all(p["elapsed_ms"] > 0 for p in live)
    rhs = verdicts["rhs-live.test"]["probes"]
    assert [p["qname"] for p in rhs] == ["test.rhs-live.test", "invalid.rhs-live.test"]


def test_rbl_check_text_and_exit_zero_when_all_alive(dns_port: int) -> None:
    result = _run(["rbl", "check", "--zone", "live.test", "--nameserver", f"127.0.0.1:{dns_port}"])
    assert result.exit_code == 0, result.output
    assert result.output.split()[:2] == ["live.test", "alive"]


def test_extra_documented_test_points_are_required(dns_port: int) -> None:
    # zen.spamhaus.org documents 127.0.0.4 (XBL) and 127.0.0.10 (PBL) as listed
    # test points besides 127.0.0.2: a zen that lacks 127.0.0.4 is broken.
    zen, sbl_xbl = parse_zone_spec("zen.spamhaus.org"), parse_zone_spec("sbl-xbl.spamhaus.org")
    assert zen is not None and sbl_xbl is not None
    assert [p for p, _, listed in rbl.test_points(zen) if listed] == ["127.0.0.2", "127.0.0.4", "127.0.0.10"]
    server = ("127.0.0.1", dns_port)
    broken = rbl.check_zone(zen, server, timeout=0.5)
    assert (broken.status, broken.reason) == ("dead", "test point 127.0.0.4 is not listed (NXDOMAIN)")
    assert rbl.check_zone(sbl_xbl, server, timeout=0.5).status == "alive"


def test_a_resolver_that_answers_nothing_is_named_not_every_list_called_dead() -> None:
    """Nothing listens on the port: every zone times out.  That is the resolver's fault;
    'dead' for each list would invite removing working ones."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # bound, never read: no answer
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = _run(["rbl", "check", "--zone", "live.test", "--zone", "dead.test", "--nameserver",
                       f"127.0.0.1:{port}", "--timeout", "0.3"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"maillens: no answer from the resolver 127.0.0.1:{port} for any of 2 zone(s) "
                                     "within 0.3 s: check --nameserver or the resolver; no list was judged")


def test_bad_nameserver_is_a_usage_error() -> None:
    result = _run(["rbl", "check", "--zone", "live.test", "--nameserver", "not-an-ip:53"])
    assert result.exit_code == 2
    assert "--nameserver" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5353", ("127.0.0.1", 5353)), ("192.0.2.1", ("192.0.2.1", 53)),
     ("[::1]:5300", ("::1", 5300)), ("::1", ("::1", 53))],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


def test_reply_filter_syntax() -> None:
    f = ReplyFilter.parse("127.0.[0..255].[2;4..6]")
    assert f is not None
    assert [f.matches(a) for a in ("127.0.9.2", "127.0.9.3", "127.0.0.5", "127.1.0.2", "junk")] == [
        True, False, True, False, False,
    ]
    assert ReplyFilter.parse("127.0.0") is None
    assert ReplyFilter.parse("127.0.0.[9..2]") is None
    zone = parse_zone_spec("list.dnswl.org=127.0.[0..255].[1..3]*-5", "postscreen_dnsbl_sites", weighted=True)
    assert zone is not None and (zone.domain, zone.kind, zone.weight) == ("list.dnswl.org", "dnswl", -5)
