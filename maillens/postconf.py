"""Reading the Postfix configuration: main.cf, master.cf, or ``postconf`` output.

maillens ties what the log shows back to the configuration that produced it,
so it needs the configuration the way Postfix itself reads it: logical lines
(continuations start with whitespace, comment lines are skipped even inside a
continuation, a ``#`` after a value is part of the value), ``$name`` /
``${name}`` / ``$(name)`` / ``${name?x}`` / ``${name:x}`` / ``${name?{x}:{y}}``
/ ``${{a} <level {b} ? {x} : {y}}`` expansion, lists separated by commas and
whitespace with ``{ }`` grouping, and master.cf ``-o name=value`` (or
``-o { name = value }``) overrides per service.

Two sources, one result:

* a directory holding ``main.cf`` (and usually ``master.cf``), like
  ``postconf -c DIR``: parsed here in pure Python, so a copy of another
  server's configuration can be read on a laptop without Postfix;
* the local Postfix (``postconf -n``, ``-d`` and ``-Mf``), when no directory
  is given and ``postconf`` is installed.

Example::

    cfg = load_postfix_config(Path("/etc/postfix"))
    cfg.mynetworks                      # ['127.0.0.0/8', '[::1]/128']
    [r.name for r in cfg.restrictions("smtp", "client")]
    cfg.rbl_zones()                     # RblZone(domain='zen.spamhaus.org', ...)
    cfg.access_maps()                   # AccessMap(type='hash', path='/etc/postfix/access', ...)
    cfg.parameter("smtpd_delay_reject") # 'yes'

DNSBL zone specs and reply filters (``RblZone``) belong to ``maillens.rbl``
and are re-exported here.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from maillens.errors import ConfigError, PostfixMissingError
from maillens.rbl import RblZone, ReplyFilter, parse_zone_spec
from maillens.restrictions import (
    ACCESS_RESTRICTIONS,
    EVALUATION_ORDER,
    STAGE_PARAMETERS,
    STAGES,
    AccessMap,
    Restriction,
    content_checks,
    implicit_checks,
    parse_restriction_list,
)

__all__ = [
    "ACCESS_RESTRICTIONS",
    "EVALUATION_ORDER",
    "STAGES",
    "STAGE_PARAMETERS",
    "AccessMap",
    "PostfixConfig",
    "ReplyFilter",
    "Restriction",
    "RblZone",
    "Service",
    "expand",
    "load_postfix_config",
    "parse_main_cf",
    "parse_master_cf",
    "split_list",
]

#: Where Postfix keeps its configuration when nobody says otherwise.
DEFAULT_CONFIG_DIRECTORY = "/etc/postfix"

#: Built-in defaults (Postfix 3.7) for the parameters maillens reads, used when
#: the configuration comes from a directory.  Reading the local Postfix takes
#: them from ``postconf -d`` instead.  ``mynetworks`` cannot be known for
#: another machine (Postfix computes it from the interfaces): loopback only.
BUILTIN_DEFAULTS: Mapping[str, str] = {
    "compatibility_level": "0",
    "config_directory": DEFAULT_CONFIG_DIRECTORY,
    "myhostname": "localhost.localdomain",
    "mydomain": "${myhostname?{$myhostname}:{localdomain}}",
    "mydestination": "$myhostname, localhost.$mydomain, localhost",
    "relay_domains": "${{$compatibility_level} <level {2} ? {$mydestination} : {}}",
    "mynetworks_style": "${{$compatibility_level} <level {2} ? {subnet} : {host}}",
    "mynetworks": "127.0.0.0/8 [::1]/128",
    "syslog_name": "${multi_instance_name?{$multi_instance_name}:{postfix}}",
    "smtpd_client_restrictions": "",
    "smtpd_helo_restrictions": "",
    "smtpd_sender_restrictions": "",
    "smtpd_relay_restrictions": "${{$compatibility_level} <level {1} ? {} : "
    "{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}",
    "smtpd_recipient_restrictions": "",
    "smtpd_data_restrictions": "",
    "smtpd_end_of_data_restrictions": "",
    "smtpd_etrn_restrictions": "",
    "smtpd_restriction_classes": "",
    "smtpd_delay_reject": "yes",
    "smtpd_helo_required": "no",
    "smtpd_reject_unlisted_recipient": "yes",
    "smtpd_reject_unlisted_sender": "no",
    "smtpd_sasl_auth_enable": "no",
    "message_size_limit": "10240000",
    "postscreen_dnsbl_sites": "",
    "postscreen_dnsbl_threshold": "1",
    "postscreen_access_list": "permit_mynetworks",
    "smtpd_policy_service_default_action": "451 4.3.5 Server configuration problem",
    # reply codes, name=value
    **dict(item.split("=") for item in (
        "reject_code=554 defer_code=450 access_map_reject_code=554 access_map_defer_code=450 "
        "invalid_hostname_reject_code=501 maps_rbl_reject_code=554 non_fqdn_reject_code=504 "
        "relay_domains_reject_code=554 unknown_address_reject_code=450 unknown_client_reject_code=450 "
        "unknown_hostname_reject_code=450 unknown_local_recipient_reject_code=550 "
        "unknown_relay_recipient_reject_code=550 unknown_virtual_alias_reject_code=550 "
        "unknown_virtual_mailbox_reject_code=550 unverified_recipient_reject_code=450 "
        "unverified_sender_reject_code=450 plaintext_reject_code=450 multi_recipient_bounce_reject_code=550 "
    ).split()),
    "reject_tempfail_action": "defer_if_permit",
    "default_rbl_reply": "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
    "$rbl_domain${rbl_reason?; $rbl_reason}",
    "soft_bounce": "no",
}

#: A master.cf without entries behaves like this one as far as smtpd goes.
DEFAULT_MASTER_CF = "smtp inet n - y - - smtpd\n"

_MAX_EXPANSION_DEPTH = 50


# --------------------------------------------------------------------------- main.cf


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Postfix's logical lines: (first line number, joined text).

    A line starting with whitespace continues the previous one; blank lines and
    lines whose first non-blank character is ``#`` are skipped, also inside a
    continuation (so a commented-out list item does not end the list).
    """
    start, parts = 0, []  # type: int, list[str]
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and parts:
            parts.append(stripped)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = number, [stripped]
    if parts:
        yield start, " ".join(parts)


def parse_main_cf(text: str, source: str = "main.cf") -> tuple[dict[str, str], list[str]]:
    """``main.cf`` text → (parameters as written, warnings).

    Later assignments win, as in Postfix.  A line without ``=`` is reported in
    the warnings (Postfix refuses to start) and otherwise ignored.
    """
    params: dict[str, str] = {}
    warnings: list[str] = []
    for number, line in _logical_lines(text):
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            warnings.append(f"{source} line {number}: not a 'name = value' line, ignored: {line[:60]!r}")
            continue
        params[name] = value.strip()
    return params, warnings


# --------------------------------------------------------------------------- expansion


def _match_brace(text: str, start: int) -> int:
    """Index just past the ``}`` matching ``text[start] == '{'``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _level(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in value.strip().split("."))
    except ValueError:
        return (0,)


def _compare(left: str, op: str, right: str) -> bool:
    if op.endswith("level"):
        a, b = _level(left), _level(right)
        op = op[: -len("level")]
    else:
        try:
            a, b = int(left), int(right)  # type: ignore[assignment]
        except ValueError:
            a, b = left, right  # type: ignore[assignment]
    return {
        "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
    }.get(op, False)


def _strip_group(text: str) -> str:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return text[1:-1].strip()
    return text


_RELATION = re.compile(r"^\{(?P<a>.*?)\}\s*(?P<op>[=!<>]=?(?:level)?)\s*\{(?P<b>.*?)\}\s*\?(?P<rest>.*)$", re.S)


def expand(value: str, lookup: Mapping[str, str], _depth: int = 0) -> str:
    """Expand ``$name`` references the way Postfix does, recursively.

    Undefined names expand to the empty string (Postfix warns).  Runaway
    recursion (``a = $b``, ``b = $a``) stops at a fixed depth rather than
    hanging on a hostile file.
    """
    if "$" not in value or _depth > _MAX_EXPANSION_DEPTH:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 >= len(value):
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in "{(":
            close = "}" if nxt == "{" else ")"
            end = _match_brace(value, i + 1) if nxt == "{" else value.find(close, i + 2) + 1
            if end <= 0:
                out.append(value[i:])
                break
            out.append(_expand_braced(value[i + 2 : end - 1], lookup, _depth))
            i = end
        else:
            m = re.match(r"[A-Za-z0-9_]+", value[i + 1 :])
            if not m:
                out.append(ch)
                i += 1
                continue
            out.append(expand(lookup.get(m.group(0), ""), lookup, _depth + 1))
            i += 1 + m.end()
    return "".join(out)


def _expand_braced(inner: str, lookup: Mapping[str, str], depth: int) -> str:
    """The inside of ``${...}``: a name, a conditional, or a relation."""
    if inner.startswith("{"):
        m = _RELATION.match(inner)
        if not m:
            return ""
        left = expand(m.group("a").strip(), lookup, depth + 1)
        right = expand(m.group("b").strip(), lookup, depth + 1)
        then, _, otherwise = _split_alternatives(m.group("rest"))
        chosen = then if _compare(left, m.group("op"), right) else otherwise
        return expand(_strip_group(chosen), lookup, depth + 1)
    m = re.match(r"([A-Za-z0-9_]+)\s*(.*)$", inner, re.S)
    if not m:
        return ""
    name, rest = m.group(1), m.group(2)
    current = expand(lookup.get(name, ""), lookup, depth + 1)
    if not rest:
        return current
    if rest[0] not in "?:":
        return ""
    if rest[0] == "?" and rest[1:].lstrip().startswith("{"):
        then, has_else, otherwise = _split_alternatives(rest[1:])
        chosen = then if current else (otherwise if has_else else "")
        return expand(_strip_group(chosen), lookup, depth + 1)
    text = _strip_group(rest[1:]) if rest[1:].lstrip().startswith("{") else rest[1:]
    wanted = bool(current) if rest[0] == "?" else not current
    return expand(text, lookup, depth + 1) if wanted else ""


def _split_alternatives(text: str) -> tuple[str, bool, str]:
    """``{x} : {y}`` → (x-group, True, y-group); ``{x}`` → (x-group, False, '')."""
    text = text.strip()
    if not text.startswith("{"):
        return text, False, ""
    end = _match_brace(text, 0)
    if end < 0:
        return text, False, ""
    then, rest = text[:end], text[end:].strip()
    if rest.startswith(":"):
        return then, True, rest[1:].strip()
    return then, False, ""


# --------------------------------------------------------------------------- lists


def split_list(text: str) -> list[str]:
    """Split a Postfix list on commas and whitespace; ``{ ... }`` stays one token."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in ", \t\r\n":
            i += 1
            continue
        if text[i] == "{":
            end = _match_brace(text, i)
            end = n if end < 0 else end
        else:
            end = i
            while end < n and text[end] not in ", \t\r\n{":
                end += 1
        tokens.append(text[i:end])
        i = end
    return tokens


# --------------------------------------------------------------------------- master.cf


@dataclass(frozen=True)
class Service:
    """One master.cf entry: ``name type private unpriv chroot wakeup maxproc command``.

    ``overrides`` are its ``-o name=value`` settings as written (not expanded).
    """

    name: str
    type: str
    command: str
    args: tuple[str, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def key(self) -> str:
        """``postconf -P`` spelling: ``submission/inet``."""
        return f"{self.name}/{self.type}"

    @property
    def is_smtpd(self) -> bool:
        return self.command == "smtpd"


def _master_tokens(line: str) -> list[str]:
    """Split on whitespace, keeping ``{ ... }`` groups as one token."""
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "{":
            end = _match_brace(line, i)
            end = n if end < 0 else end
        else:
            end = i
            while end < n and not line[end].isspace():
                end += 1
        tokens.append(line[i:end])
        i = end
    return tokens


def parse_master_cf(text: str, source: str = "master.cf") -> tuple[list[Service], list[str]]:
    """``master.cf`` text → (services in file order, warnings)."""
    services: list[Service] = []
    warnings: list[str] = []
    for number, line in _logical_lines(text):
        tokens = _master_tokens(line)
        if len(tokens) < 8:
            warnings.append(f"{source} line {number}: fewer than 8 fields, ignored: {line[:60]!r}")
            continue
        overrides: dict[str, str] = {}
        args: list[str] = []
        rest = tokens[8:]
        i = 0
        while i < len(rest):
            token = rest[i]
            if token == "-o" and i + 1 < len(rest):
                setting = _strip_group(rest[i + 1])
                i += 2
            elif token.startswith("-o") and len(token) > 2:
                setting = _strip_group(token[2:])
                i += 1
            else:
                args.append(token)
                i += 1
                continue
            name, sep, value = setting.partition("=")
            if sep and name.strip():
                overrides[name.strip()] = value.strip()
            else:
                warnings.append(f"{source} line {number}: '-o {setting}' is not name=value, ignored")
        services.append(
            Service(tokens[0], tokens[1], tokens[7], tuple(args), overrides, number)
        )
    return services, warnings


# --------------------------------------------------------------------------- the config object


class PostfixConfig:
    """The configuration of one Postfix instance, as maillens needs it.

    ``main`` holds the parameters set explicitly (``postconf -n``), ``defaults``
    what Postfix uses otherwise, ``services`` the master.cf entries.  Every
    accessor takes an optional master.cf service name because ``-o`` overrides
    make the submission service see different restrictions than ``smtp``.
    """

    def __init__(
        self,
        main: Mapping[str, str],
        services: Iterable[Service] = (),
        *,
        defaults: Mapping[str, str] | None = None,
        source: str = "",
        config_dir: Path | None = None,
        warnings: Iterable[str] = (),
    ) -> None:
        self.main: dict[str, str] = dict(main)
        self.defaults: dict[str, str] = dict(BUILTIN_DEFAULTS if defaults is None else defaults)
        self.services: list[Service] = list(services)
        self.source = source
        self.config_dir = config_dir
        self.warnings: list[str] = list(warnings)

    # ---------------------------------------------------------------- parameters

    def service(self, name: str | None) -> Service | None:
        """The master.cf entry called ``name`` (an smtpd one preferred), if any."""
        if name is None:
            return None
        matches = [s for s in self.services if s.name == name or s.key == name]
        return next((s for s in matches if s.is_smtpd), matches[0] if matches else None)

    def _scope(self, service: str | None) -> dict[str, str]:
        """main.cf values over defaults, with the service's ``-o`` settings on top."""
        scope = dict(self.defaults)
        scope.update(self.main)
        svc = self.service(service)
        if svc is not None:
            scope["service_name"] = svc.name
            scope["process_name"] = svc.command
            scope.update(svc.overrides)
        return scope

    def raw_parameter(self, name: str, service: str | None = None) -> str | None:
        """The value as written (main.cf, ``-o`` override or default), unexpanded."""
        scope = self._scope(service)
        return scope.get(name)

    def parameter(self, name: str, service: str | None = None, *, expand_vars: bool = True) -> str | None:
        """The value Postfix would use, ``$name`` expanded (None when unknown).

        With ``service`` the master.cf ``-o`` overrides of that service apply.
        """
        scope = self._scope(service)
        if name not in scope:
            return None
        return expand(scope[name], scope) if expand_vars else scope[name]

    def list_parameter(self, name: str, service: str | None = None) -> list[str]:
        """A list-valued parameter split on commas and whitespace, groups kept."""
        return split_list(self.parameter(name, service) or "")

    def flag(self, name: str, service: str | None = None) -> bool:
        """A yes/no parameter (anything but ``yes``/``true``/``1`` is no)."""
        return (self.parameter(name, service) or "").strip().lower() in ("yes", "true", "1")

    def is_explicit(self, name: str, service: str | None = None) -> bool:
        """True when main.cf (or the service's ``-o``) sets ``name``."""
        svc = self.service(service)
        return name in self.main or (svc is not None and name in svc.overrides)

    # ---------------------------------------------------------------- common sets

    @property
    def mynetworks(self) -> list[str]:
        """``mynetworks`` entries, expanded: CIDR, ``[v6]/len``, ``/file`` or ``type:table``."""
        return self.list_parameter("mynetworks")

    def mynetworks_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The literal networks in ``mynetworks`` (files and tables skipped), for ban exclusion."""
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in self.mynetworks:
            if entry.startswith("!"):  # an exclusion, not a trusted network
                continue
            text = re.sub(r"^\[([^\]]+)\]", r"\1", entry)
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                continue
        return nets

    @property
    def mydestination(self) -> list[str]:
        return self.list_parameter("mydestination")

    @property
    def relay_domains(self) -> list[str]:
        return self.list_parameter("relay_domains")

    def delay_reject(self, service: str | None = None) -> bool:
        """``smtpd_delay_reject``: client/helo/sender rejects wait until RCPT TO."""
        return self.flag("smtpd_delay_reject", service)

    def reply_codes(self, service: str | None = None) -> dict[str, str]:
        """Every ``*_reject_code`` / ``*_defer_code`` parameter and its value."""
        names = {n for n in (*self.defaults, *self.main) if n.endswith(("_reject_code", "_defer_code"))}
        names |= {"reject_code", "defer_code"}
        return {n: self.parameter(n, service) or "" for n in sorted(names)}

    # ---------------------------------------------------------------- services

    def smtpd_services(self) -> list[Service]:
        """master.cf services run by smtpd (the ones restrictions apply to)."""
        found = [s for s in self.services if s.is_smtpd]
        return found or parse_master_cf(DEFAULT_MASTER_CF)[0]

    def syslog_name(self, service: str) -> str:
        """The program prefix this service logs under (``postfix/submission``)."""
        return self.parameter("syslog_name", service) or "postfix"

    def service_for_program(self, program: str | None) -> str | None:
        """The smtpd service whose log lines carry ``program`` (``postfix/submission/smtpd``).

        Several services may share a syslog name; the ``inet`` one (what
        clients reach) wins, then file order.
        """
        if not program:
            return None
        prefix = program.rsplit("/", 1)[0] if "/" in program else program
        matches = [s for s in self.smtpd_services() if self.syslog_name(s.name) == prefix]
        if not matches:
            return None
        return next((s.name for s in matches if s.type == "inet"), matches[0].name)

    # ---------------------------------------------------------------- restrictions

    def restrictions(self, service: str = "smtp", stage: str = "client") -> list[Restriction]:
        """The restriction list of one stage for one service, in order.

        ``stage`` is one of ``STAGES`` (client, helo, sender, relay, recipient,
        data, end_of_data, etrn).  Bare ``type:table`` entries come back as the
        ``check_<stage>_access`` Postfix applies to them; ``warn_if_reject X``
        as ``X`` with ``warn_only=True``.
        """
        if stage not in STAGE_PARAMETERS:
            raise ConfigError(f"unknown restriction stage {stage!r}; use one of {', '.join(STAGES)}")
        param = STAGE_PARAMETERS[stage]
        classes = self.restriction_classes(service)
        return parse_restriction_list(
            self.list_parameter(param, service),
            service=service,
            stage=stage,
            parameter=param,
            explicit=self.is_explicit(param, service),
            classes=classes,
        )

    def all_restrictions(self, services: Iterable[str] | None = None) -> list[Restriction]:
        """Every configured restriction of every smtpd service, stage by stage in evaluation order."""
        names = list(services) if services is not None else [s.name for s in self.smtpd_services()]
        return [r for name in names for stage in STAGES for r in self.restrictions(name, stage)]

    def implicit_checks(self, service: str = "smtp") -> list[Restriction]:
        """Checks smtpd makes without a list entry (see ``restrictions.implicit_checks``)."""
        return implicit_checks(self, service)

    def checks(self, service: str = "smtp") -> list[Restriction]:
        """Listed restrictions and implicit checks of one service, in evaluation order."""
        implicit = self.implicit_checks(service)
        return [
            r
            for stage in STAGES
            for r in (*self.restrictions(service, stage), *(i for i in implicit if i.stage == stage))
        ]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (the report's configuration section)."""
        return {
            "source": self.source,
            "mynetworks": self.mynetworks,
            "mydestination": self.mydestination,
            "relay_domains": self.relay_domains,
            "services": {
                s.name: {
                    "syslog_name": self.syslog_name(s.name),
                    "smtpd_delay_reject": self.delay_reject(s.name),
                    "restrictions": [r.to_dict() for r in self.checks(s.name)],
                }
                for s in self.smtpd_services()
            },
            "content_checks": [r.to_dict() for r in content_checks(self)],
            "rbl_zones": [z.to_dict() for z in self.rbl_zones()],
            "access_maps": [
                {"restriction": m.restriction, "map": m.spec, "path": m.path, "service": m.service,
                 "stage": m.stage}
                for m in self.access_maps()
            ],
            "policy_services": [r.argument for r in self.policy_services()],
            "reply_codes": self.reply_codes(),
            "warnings": self.warnings,
        }

    def restriction_classes(self, service: str | None = None) -> dict[str, list[str]]:
        """``smtpd_restriction_classes`` and the tokens of each class."""
        return {c: self.list_parameter(c, service) for c in self.list_parameter("smtpd_restriction_classes", service)}

    def rbl_zones(self) -> list[RblZone]:
        """Every DNSBL/RHSBL/DNSWL zone in use (restrictions and postscreen), once per spec.

        The same zone with different reply filters is listed once per filter:
        they are different checks.
        """
        seen: dict[tuple[str, str, str], RblZone] = {}
        classes = self.restriction_classes()  # every class, also those only an access map's result names
        in_classes = [r for name, tokens in classes.items()
                      for r in parse_restriction_list(tokens, service=None, stage="recipient", parameter=name,
                                                      classes=classes)]
        for r in [*self.all_restrictions(), *in_classes]:
            if r.zone is not None:
                key = (r.zone.kind, r.zone.domain, r.zone.filter_text)
                seen.setdefault(key, r.zone)
        for site in self.list_parameter("postscreen_dnsbl_sites"):
            zone = parse_zone_spec(site, restriction="postscreen_dnsbl_sites", weighted=True)
            if zone is not None:
                seen.setdefault((zone.kind, zone.domain, zone.filter_text + f"*{zone.weight}"), zone)
        return list(seen.values())

    def access_maps(self) -> list[AccessMap]:
        """Access tables named in restriction lists (and postscreen_access_list), in order."""
        maps: list[AccessMap] = []
        seen: set[tuple[str, str, str, str]] = set()
        for r in self.all_restrictions():
            if r.map is not None and (r.service, r.stage, r.name, r.map.spec) not in seen:
                seen.add((r.service, r.stage, r.name, r.map.spec))
                maps.append(r.map)
        for entry in self.list_parameter("postscreen_access_list"):
            m = AccessMap.from_spec(entry, restriction="postscreen_access_list", service=None, stage=None)
            if m is not None:
                maps.append(m)
        return maps

    def policy_services(self) -> list[Restriction]:
        """Every ``check_policy_service`` in use (argument: endpoint or ``{ }`` group)."""
        return [r for r in self.all_restrictions() if r.name == "check_policy_service"]

    def locate(self, path: str) -> Path | None:
        """A file the configuration names, found where it really is.

        Reading a copied configuration directory, ``/etc/postfix/access`` is
        looked up in that directory too (same name relative to
        ``config_directory``, then by base name), so maps travel with the copy.
        """
        p = Path(path)
        if p.is_file():
            return p
        if self.config_dir is None:
            return None
        candidates = []
        for original in {self.parameter("config_directory") or DEFAULT_CONFIG_DIRECTORY, DEFAULT_CONFIG_DIRECTORY}:
            try:
                candidates.append(self.config_dir / p.relative_to(original))
            except ValueError:
                pass
        candidates.append(self.config_dir / p.name)
        return next((c for c in candidates if c.is_file()), None)


# --------------------------------------------------------------------------- loading


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check --postfix-config") from None


def load_from_directory(config_dir: Path) -> PostfixConfig:
    """Parse ``DIR/main.cf`` and ``DIR/master.cf`` (like ``postconf -c DIR``)."""
    config_dir = Path(config_dir)
    main_cf = config_dir / "main.cf"
    if not main_cf.is_file():
        raise ConfigError(
            f"no main.cf in {config_dir}; give --postfix-config the directory that holds main.cf"
        )
    main, warnings = parse_main_cf(_read_text(main_cf), str(main_cf))
    master_cf = config_dir / "master.cf"
    if master_cf.is_file():
        services, more = parse_master_cf(_read_text(master_cf), str(master_cf))
        warnings += more
    else:
        services = parse_master_cf(DEFAULT_MASTER_CF)[0]
        warnings.append(f"{master_cf} not found: assuming one smtpd service 'smtp'")
    defaults = dict(BUILTIN_DEFAULTS, config_directory=str(config_dir))  # as postconf -c DIR does
    return PostfixConfig(main, services, defaults=defaults, source=f"directory {config_dir}",
                         config_dir=config_dir, warnings=warnings)


def _run_postconf(postconf: str, *args: str) -> str:
    try:
        done = subprocess.run([postconf, *args], capture_output=True, text=True, errors="replace",
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run {postconf}: {exc}; give --postfix-config DIR instead") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"'{postconf} {' '.join(args)}' failed: {first}; give --postfix-config DIR instead")
    return done.stdout


def load_from_postconf(postconf: str = "postconf") -> PostfixConfig:
    """The local Postfix: ``postconf -n`` (explicit), ``-d`` (defaults), ``-Mf`` (master.cf)."""
    main, warnings = parse_main_cf(_run_postconf(postconf, "-n"), "postconf -n")
    defaults, _ = parse_main_cf(_run_postconf(postconf, "-d"), "postconf -d")
    services, more = parse_master_cf(_run_postconf(postconf, "-Mf"), "postconf -M")
    merged = dict(BUILTIN_DEFAULTS)
    merged.update(defaults)
    config_dir = Path(main.get("config_directory") or defaults.get("config_directory") or DEFAULT_CONFIG_DIRECTORY)
    return PostfixConfig(main, services, defaults=merged, source=f"{postconf} -n",
                         config_dir=config_dir, warnings=warnings + more)


def postfix_settings(section: Mapping[str, object]) -> dict[str, str | None]:
    """Validate the ``[postfix]`` config section: ``config_dir`` and ``postconf`` (paths)."""
    known = {"config_dir", "postconf"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"[postfix] has no setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    out: dict[str, str | None] = {}
    for key in sorted(known):
        value = section.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"[postfix] {key} must be a path string")
        out[key] = value or None
    return out


def load_postfix_config(config_dir: Path | str | None = None, *, postconf: str | None = None) -> PostfixConfig:
    """The Postfix configuration maillens should reason about.

    ``config_dir`` (``--postfix-config``, ``[postfix] config_dir``) wins: its
    main.cf/master.cf are parsed directly.  Otherwise the local Postfix is
    asked through ``postconf`` (found on PATH or in /usr/sbin); without it,
    /etc/postfix is read if present.
    """
    if config_dir:
        return load_from_directory(Path(config_dir))
    binary = postconf or shutil.which("postconf") or next(
        (p for p in ("/usr/sbin/postconf", "/usr/local/sbin/postconf") if Path(p).exists()), None
    )
    if binary:
        return load_from_postconf(binary)
    if (Path(DEFAULT_CONFIG_DIRECTORY) / "main.cf").is_file():
        return load_from_directory(Path(DEFAULT_CONFIG_DIRECTORY))
    raise PostfixMissingError(
        "Postfix is not installed here and no configuration was given; "
        "use --postfix-config DIR with a copy of main.cf and master.cf"
    )
