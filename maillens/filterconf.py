"""fail2ban filter files: read, interpolate, compile, match -- as fail2ban does.

maillens keeps every classification rule as a fail2ban filter file (``parsers/``)
and can load fail2ban's own (``/etc/fail2ban/filter.d``), so one reader serves
both.  The semantics follow fail2ban 1.0:

* files: ``name.conf`` then ``name.local``; ``[INCLUDES] before``/``after``
  (relative to the including file), each with its own ``.local``; later files
  override options per section, and the overridden value stays reachable as
  ``%(known/option)s``;
* ``%(option)s`` / ``%(section/option)s`` interpolation (ConfigParser style,
  ``[DEFAULT]`` as fallback), with filter parameters (``name[mode=aggressive]``)
  and ``[Init]`` options overriding ``[Definition]`` ones;
* ``<tag>`` substitution, recursive (``<mdpr-<mode>>``), with ``<sec/opt>``
  cross-section references;
* fail2ban's regex tags: ``<HOST>``, ``<ADDR>``, ``<IP4>``, ``<IP6>``, ``<DNS>``,
  ``<CIDR>``, ``<SUBNET>``, ``<F-ID/>``, ``<F-PORT/>`` and ``<F-NAME>...</F-NAME>``
  captures (stored lower-case);
* matching: the line's leading time stamp is removed, ``prefregex`` must match
  first and its ``<F-CONTENT>`` is what the ``failregex`` lines see; the first
  failregex that matches wins unless an ``ignoreregex`` matches; the failure
  ID is the first of the groups ``fid``, ``ip4``, ``ip6``, ``dns`` that matched.

maillens-specific metadata rides inside regex comments, which fail2ban (and
Python's ``re``) ignore: ``(?#kind=reject restriction=reject_rbl_client)``.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

from maillens.envelope import strip_date
from maillens.errors import FilterError

FAIL2BAN_FILTER_DIRS = (Path("/etc/fail2ban/filter.d"),)

IP_4_RE = r"(?:\d{1,3}\.){3}\d{1,3}"
IP_6_RE = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
_R_IP4 = rf"(?:::f{{4,6}}:)?(?P<ip4>{IP_4_RE})"
_R_IP6 = rf"(?P<ip6>{IP_6_RE})"
_R_DNS = r"(?P<dns>[\w\-.^_]*\w)"
_R_ADDR = rf"\[?(?:{_R_IP4}|{_R_IP6})\]?"
_R_HOST = rf"(?:{_R_ADDR}|{_R_DNS})"
_R_CIDR = r"(?P<cidr>\d+)"
_R_SUBNET = rf"\[?(?:{_R_IP4}|{_R_IP6})(?:/{_R_CIDR})?\]?"

#: fail2ban's fixed regex tags.
HOST_TAGS: Mapping[str, str] = {
    "IP4": _R_IP4, "F-IP4/": _R_IP4,
    "IP6": _R_IP6, "F-IP6/": _R_IP6,
    "ADDR": _R_ADDR, "F-ADDR/": _R_ADDR,
    "CIDR": _R_CIDR, "F-CIDR/": _R_CIDR,
    "SUBNET": _R_SUBNET, "F-SUBNET/": _R_SUBNET,
    "DNS": _R_DNS, "F-DNS/": _R_DNS,
    "F-ID/": r"(?P<fid>\S+)",
    "F-PORT/": r"(?P<fport>\w+)",
}
_TAG_MAP = {"id": "fid", "port": "fport"}
FAILURE_ID_GROUPS = ("fid", "ip4", "ip6", "dns")
_FAILURE_ID_PRESENT = FAILURE_ID_GROUPS + ("mlfid",)

_FTAG_RE = re.compile(r"</?[\w\-]+/?>")
_FCUSTNAME_RE = re.compile(r"^(/?)F-([A-Z0-9_\-]+)$")
_TAG_RE = re.compile(r"<([^ <>]+)>")
_INTERP_RE = re.compile(r"%\(([^)]+)\)s")
_GLOBAL_FLAGS_RE = re.compile(r"(?<!\\)\((?:\?:)?(\(\?[a-z]+)\)")
_ANNOTATION_RE = re.compile(r"\(\?#([^)]*)\)")
_SPEC_RE = re.compile(r"^(?P<name>[^\[]+?)\s*(?:\[(?P<params>.*)\])?\s*$", re.DOTALL)
_PARAM_RE = re.compile(r"""\s*([\w\-./]+)\s*=\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,]*)\s*(?:,|$)""")
_MAX_TAG_ROUNDS = 50


def parsers_dir() -> Path:
    """The directory of maillens's own rule files (``maillens.parsers``)."""
    from maillens import parsers

    return Path(parsers.__file__).resolve().parent


# --------------------------------------------------------------------------- spec


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``'postfix[mode=aggressive]'`` -> ``('postfix', {'mode': 'aggressive'})``."""
    m = _SPEC_RE.match(spec.strip())
    if m is None or not m.group("name").strip():
        raise FilterError(f"filter spec {spec!r} is not NAME or NAME[key=value, ...]")
    params: dict[str, str] = {}
    raw = m.group("params")
    if raw and raw.strip():
        pos = 0
        while pos < len(raw):
            pm = _PARAM_RE.match(raw, pos)
            if pm is None or pm.end() == pos:
                raise FilterError(f"filter spec {spec!r}: cannot read parameters {raw[pos:]!r}; use key=value, ...")
            value = pm.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            params[pm.group(1)] = value
            pos = pm.end()
    return m.group("name").strip(), params


def find_filter_file(name: str, search_dirs: Iterable[Path] = ()) -> Path:
    """A filter name or path to an existing ``.conf``/``.local`` file.

    Paths (anything with a slash, or an existing file) are taken as they are;
    bare names are looked up in ``search_dirs``, then maillens's ``parsers/``,
    then fail2ban's ``filter.d``.
    """
    candidate = Path(name)
    if "/" in name or candidate.exists():
        for path in (candidate, candidate.with_name(candidate.name + ".conf")):
            if path.is_file():
                return path
        local = candidate.with_suffix(".local") if candidate.suffix == ".conf" else None
        if local is not None and local.is_file():
            return local
        raise FilterError(f"filter file {name} does not exist")
    dirs = [*search_dirs, parsers_dir(), *FAIL2BAN_FILTER_DIRS]
    stem = name[:-5] if name.endswith(".conf") else name
    for d in dirs:
        for suffix in (".conf", ".local"):
            path = Path(d) / f"{stem}{suffix}"
            if path.is_file():
                return path
    searched = ", ".join(str(d) for d in dirs)
    raise FilterError(f"no filter named {name!r} in {searched}; give a path or add it to [parse] rules_dirs")


# --------------------------------------------------------------------------- reading


def _read_one(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(
        strict=False, inline_comment_prefixes=(";",), interpolation=None, default_section="DEFAULT"
    )
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            parser.read_file(fh, source=str(path))
    except configparser.Error as exc:
        raise FilterError(f"{path}: not a valid fail2ban config file ({exc.message.splitlines()[0]})") from None
    except OSError as exc:
        raise FilterError(f"cannot read filter file {path}: {exc.strerror}") from None
    out: dict[str, dict[str, str]] = {"DEFAULT": dict(parser.defaults())}
    for section in parser.sections():
        out[section] = {k: v for k, v in parser._sections[section].items()}  # own options only
    return out


def _with_local(path: Path) -> list[Path]:
    files = [path]
    local = path.with_suffix(".local")
    if path.suffix == ".conf" and local.is_file():
        files.append(local)
    return files


def _include_order(path: Path, seen: tuple[Path, ...] = ()) -> list[Path]:
    """Files in reading order: includes before, the file (+ .local), includes after."""
    if path in seen:
        raise FilterError(f"{path}: includes itself (via {' -> '.join(str(p) for p in seen)})")
    order: list[Path] = []
    includes: dict[str, list[str]] = {"before": [], "after": []}
    for f in _with_local(path):
        sections = _read_one(f)
        inc = {k.lower(): v for k, v in sections.get("INCLUDES", {}).items()}
        for key in ("before", "after"):
            includes[key] += [x.strip() for x in inc.get(key, "").split("\n") if x.strip()]
    for key, files in includes.items():
        resolved = []
        for name in files:
            inc_path = (path.parent / name) if not os.path.isabs(name) else Path(name)
            if inc_path.is_file():
                resolved += _include_order(inc_path, seen + (path,))
            elif inc_path.with_suffix(".local").is_file() and inc_path.suffix == ".conf":
                resolved += [inc_path.with_suffix(".local")]
        includes[key] = resolved  # type: ignore[assignment]
    order += includes["before"]  # type: ignore[arg-type]
    order += _with_local(path)
    order += includes["after"]  # type: ignore[arg-type]
    return order


def read_sections(path: Path) -> dict[str, dict[str, str]]:
    """All sections of a filter file and its includes, merged as fail2ban merges them."""
    merged: dict[str, dict[str, str]] = {"DEFAULT": {}}
    for f in _include_order(path):
        for section, options in _read_one(f).items():
            if section == "DEFAULT":
                merged["DEFAULT"].update(options)
                continue
            if section == "INCLUDES":
                continue
            current = merged.get(section)
            if current is None:
                merged[section] = dict(options)
            else:
                known = merged.setdefault("KNOWN/" + section, {})
                known.update({k: current[k] for k in options if k in current})
                current.update(options)
    return merged


# --------------------------------------------------------------------------- interpolation


class _Resolver:
    """``%(x)s`` interpolation over merged sections, with init/param overrides."""

    def __init__(self, sections: dict[str, dict[str, str]], overrides: dict[str, str], path: Path) -> None:
        self.sections = sections
        self.overrides = overrides
        self.path = path

    def raw(self, section: str, option: str) -> str | None:
        if "/" in option:
            sec, opt = option.split("/", 1)
            lowered = sec.lower()
            if lowered == "known":
                for candidate in ("KNOWN/" + section, section):
                    value = self.sections.get(candidate, {}).get(opt)
                    if value is not None:
                        return value
                return self.sections["DEFAULT"].get(opt)
            target = "DEFAULT" if lowered == "default" else sec
            value = self.sections.get(target, {}).get(opt)
            if value is not None:
                return value
        if option in self.overrides:
            return self.overrides[option]
        value = self.sections.get(section, {}).get(option)
        if value is None:
            value = self.sections["DEFAULT"].get(option)
        return value

    def get(self, section: str, option: str, depth: int = 0) -> str | None:
        value = self.raw(section, option)
        if value is None:
            return None
        return self.interpolate(section, value, option, depth)

    def interpolate(self, section: str, value: str, option: str, depth: int = 0) -> str:
        if depth > 20:
            raise FilterError(f"{self.path}: option {option!r} refers to itself through %(...)s")
        if "%" not in value:
            return value
        out: list[str] = []
        pos = 0
        while True:
            idx = value.find("%", pos)
            if idx < 0:
                out.append(value[pos:])
                break
            out.append(value[pos:idx])
            if value.startswith("%%", idx):
                out.append("%")
                pos = idx + 2
                continue
            m = _INTERP_RE.match(value, idx)
            if m is None:
                raise FilterError(f"{self.path}: option {option!r}: a bare '%' must be written '%%'")
            name = m.group(1)
            sub_section = section
            replacement = self.get(sub_section, name.lower() if "/" not in name else name, depth + 1)
            if replacement is None:
                raise FilterError(f"{self.path}: option {option!r} uses %({name})s, which is not defined")
            out.append(replacement)
            pos = m.end()
        return "".join(out)


def _substitute_tags(tags: dict[str, str], lookup) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """fail2ban's recursive ``<tag>`` substitution; unknown tags stay as they are."""
    tags = dict(tags)
    for _ in range(_MAX_TAG_ROUNDS):
        changed = False
        for name in list(tags):
            value = tags[name]
            if "<" not in value:
                continue
            new = _replace_tags(name, value, tags, lookup)
            if new != value:
                tags[name] = new
                changed = True
        if not changed:
            return tags
    raise FilterError("recursive <tag> definitions cannot be resolved")


def _replace_tags(name: str, value: str, tags: Mapping[str, str], lookup) -> str:  # type: ignore[no-untyped-def]
    pos = 0
    count: dict[str, int] = {}
    while True:
        m = _TAG_RE.search(value, pos)
        if m is None:
            return value
        tag = m.group(1)
        repl = tags.get(tag)
        if repl is None:
            repl = lookup(tag)
        if repl is None:
            pos = m.end()
            continue
        if tag == name or count.get(tag, 0) > 50:
            raise FilterError(f"tag <{name}> refers to itself")
        count[tag] = count.get(tag, 0) + 1
        value = value.replace(f"<{tag}>", repl)
        pos = m.start()


# --------------------------------------------------------------------------- regexes


def resolve_host_tags(regex: str, use_dns: str = "yes") -> str:
    """Replace fail2ban's regex tags (``<HOST>``, ``<F-NAME>``...) by Python groups."""
    open_tags: dict[str, bool] = {}
    skip = [0]

    def subst(m: re.Match[str]) -> str:
        tag = m.group()
        tn = tag[1:-1]
        if tn == "HOST":
            return _R_HOST if use_dns != "no" else _R_ADDR
        if tn == "SKIPLINES":
            n = skip[0]
            skip[0] += 1
            return rf"\n(?P<skiplines{n}>(?:(?:.*\n)*?))"
        if tn in HOST_TAGS:
            return HOST_TAGS[tn]
        cm = _FCUSTNAME_RE.match(tn)
        if cm:
            closing, name = cm.groups()
            if closing:
                return ")" if open_tags.get(name) else tag
            open_tags[name] = True
            name = name.lower()
            return f"(?P<{_TAG_MAP.get(name, name)}>"
        return tag

    return _FTAG_RE.sub(subst, regex)


@dataclass(slots=True)
class FilterRegex:
    """One compiled failregex/ignoreregex/prefregex line."""

    text: str  # after tag substitution, before host-tag resolution
    pattern: re.Pattern[str]
    index: int
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def anchored(self) -> bool:
        return _ANNOTATION_RE.sub("", self.pattern.pattern).startswith("^")


def compile_regex(text: str, index: int, *, where: str, use_dns: str = "yes", multiline: bool = False) -> FilterRegex:
    expanded = resolve_host_tags(text, use_dns)
    expanded = _GLOBAL_FLAGS_RE.sub(r"\1:", expanded)
    try:
        compiled = re.compile(expanded, re.MULTILINE if multiline else 0)
    except re.error as exc:
        raise FilterError(f"{where}: regex {index + 1} does not compile ({exc}): {text}") from None
    annotations: dict[str, str] = {}
    for comment in _ANNOTATION_RE.findall(text):
        for word in comment.split():
            if "=" in word:
                key, value = word.split("=", 1)
                annotations[key] = value
    return FilterRegex(text, compiled, index, annotations)


@dataclass(slots=True)
class FilterMatch:
    """What fail2ban would report for one line."""

    host: str
    fields: dict[str, str]
    regex: FilterRegex


@dataclass
class Filter:
    """A loaded fail2ban filter: ``prefregex``, ``failregex`` lines, ``ignoreregex`` lines."""

    name: str
    path: Path
    params: dict[str, str]
    options: dict[str, str]
    prefregex: FilterRegex | None
    failregex: list[FilterRegex]
    ignoreregex: list[FilterRegex]
    maxlines: int = 1

    @property
    def spec(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}[{', '.join(f'{k}={v}' for k, v in self.params.items())}]"

    def match_text(self, text: str) -> FilterMatch | None:
        """Match the line *without* its time stamp, as fail2ban does."""
        fields: dict[str, str] = {}
        content = text
        if self.prefregex is not None:
            pm = self.prefregex.pattern.search(text)
            if pm is None:
                return None
            fields = {k: v for k, v in pm.groupdict().items() if v is not None}
            content = fields.pop("content", text)
        for rx in self.failregex:
            m = rx.pattern.search(content)
            if m is None:
                continue
            if any(ig.pattern.search(text) for ig in self.ignoreregex):
                return None
            groups = {**fields, **{k: v for k, v in m.groupdict().items() if v is not None}}
            host = next((groups[g] for g in FAILURE_ID_GROUPS if groups.get(g) is not None), None)
            if host is None:
                return None
            return FilterMatch(host, groups, rx)
        return None

    def match_line(self, line: str) -> FilterMatch | None:
        """Match a whole log line; lines without a leading time stamp never match."""
        rest, date = strip_date(line.rstrip("\r\n"))
        if date is None:
            return None
        return self.match_text(rest)


def _split_lines(value: str | None) -> list[str]:
    if not value:
        return []
    return [line for line in value.split("\n") if line.strip() != ""]


@lru_cache(maxsize=128)
def _load_cached(spec: str, search_dirs: tuple[Path, ...]) -> Filter:
    name, params = parse_spec(spec)
    path = find_filter_file(name, search_dirs)
    sections = read_sections(path)
    init = dict(sections.get("Init", {}))
    overrides = {**init, **params}
    for key, value in init.items():
        overrides.setdefault("known/" + key, value)
    resolver = _Resolver(sections, overrides, path)
    definition_names = set(sections.get("Definition", {})) | set(sections["DEFAULT"])
    combined: dict[str, str] = {}
    for option in definition_names:
        value = resolver.get("Definition", option)
        if value is not None:
            combined[option] = value
    for key, value in overrides.items():
        combined[key] = resolver.interpolate("Definition", value, key)

    def lookup(tag: str) -> str | None:
        if "/" not in tag:
            return None
        try:
            return resolver.get("Definition", tag)
        except FilterError:
            return None

    options = _substitute_tags(combined, lookup)
    where = str(path)
    use_dns = options.get("usedns", "yes")
    try:
        maxlines = int(options.get("maxlines", "1") or 1)
    except ValueError:
        raise FilterError(f"{where}: maxlines must be a whole number") from None
    multiline = maxlines > 1
    pref_text = (options.get("prefregex") or "").strip()
    prefregex = compile_regex(pref_text, 0, where=where, use_dns=use_dns, multiline=multiline) if pref_text else None
    failregex = [
        compile_regex(t, i, where=where, use_dns=use_dns, multiline=multiline)
        for i, t in enumerate(_split_lines(options.get("failregex")))
    ]
    ignoreregex = [
        compile_regex(t, i, where=where, use_dns=use_dns, multiline=multiline)
        for i, t in enumerate(_split_lines(options.get("ignoreregex")))
    ]
    for rx in failregex:
        has_id = any(g in rx.pattern.groupindex for g in _FAILURE_ID_PRESENT)
        pref_id = prefregex is not None and any(g in prefregex.pattern.groupindex for g in _FAILURE_ID_PRESENT)
        if not (has_id or pref_id):
            raise FilterError(f"{where}: failregex {rx.index + 1} has no <HOST>, <ADDR> or <F-ID> group: {rx.text}")
    display = path.stem
    return Filter(display, path, params, options, prefregex, failregex, ignoreregex, maxlines)


def load_filter(spec: str, search_dirs: Iterable[Path | str] = ()) -> Filter:
    """Load a filter by spec: ``'postfix[mode=aggressive]'``, a path, or a ``parsers/`` name."""
    return _load_cached(spec, tuple(Path(d) for d in search_dirs))
