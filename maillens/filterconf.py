"""fail2ban filter files: read, interpolate, compile -- as fail2ban 1.0 does.

maillens keeps every classification rule as a fail2ban filter file (``parsers/``)
and loads fail2ban's own (``/etc/fail2ban/filter.d``), so one reader serves
both.  It is a re-implementation (fail2ban's package is never imported), kept
to fail2ban's semantics because users move filters between the two:

* files: ``name.conf``, ``name.d/*.conf``, ``name.local``, ``name.d/*.local``;
  each file's ``[INCLUDES] before``/``after`` (relative to that file, each with
  its own ``.local``) are read before/after it; later files override options
  per section, and the value overridden stays reachable as ``%(known/opt)s``;
* ``%(option)s``, ``%(section/option)s``, ``%(known/option)s`` and
  ``%(__name__)s`` interpolation (ConfigParser's, ``[DEFAULT]`` as fallback),
  with filter parameters (``name[mode=aggressive]``) taking precedence;
* ``[Init]`` options and parameters as ``<tag>`` values, then fail2ban's
  recursive ``<tag>`` substitution (``<mdre-<mode>>``, ``<lt_<logtype>/opt>``);
* the regex tags ``<HOST>``, ``<ADDR>``, ``<IP4>``, ``<IP6>``, ``<DNS>``,
  ``<CIDR>``, ``<SUBNET>``, ``<F-ID/>``, ``<F-PORT/>``, ``<SKIPLINES>`` and
  ``<F-NAME>...</F-NAME>`` captures (group names lower-case, ``alt_``/``tuple_``
  merged).

Matching is in ``maillens.filtermatch``: ``Filter.match_line`` and
``Filter.matcher()``.  maillens's own metadata rides in regex comments, which
fail2ban and Python ignore: ``(?#kind=reject restriction=reject_rbl_client)``.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from maillens.errors import FilterError

if TYPE_CHECKING:
    from maillens.datedetect import DateDetector
    from maillens.filtermatch import FilterMatch, Matcher

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
#: The options fail2ban's FilterReader takes from ``[Definition]``, in its order.
_CONFIG_OPTS = ("usedns", "prefregex", "ignoreregex", "failregex", "maxlines", "datepattern", "journalmatch")

_FTAG_RE = re.compile(r"</?[\w\-]+/?>")
_FCUSTNAME_RE = re.compile(r"^(/?)F-([A-Z0-9_\-]+)$")
_FCAPTURE_RE = re.compile(r"<F-([A-Z0-9_\-]+)>")
_TAG_RE = re.compile(r"<([^ <>]+)>")
_GLOBAL_FLAGS_RE = re.compile(r"(?<!\\)\((?:\?:)?(\(\?[a-z]+)\)")
_ANNOTATION_RE = re.compile(r"\(\?#([^)]*)\)")
_COMPLEX_NAME_RE = re.compile(r"^(alt_|tuple_)(.*?)(?:_\d+)?$")
_SECTION_OPTNAME_RE = re.compile(r"^([\w\-]+)/([^\s>]+)$")
_SECTION_OPTSUBST_RE = re.compile(r"%\(([\w\-]+/([^\)]+))\)s")
_CONDITIONAL_RE = re.compile(r"^(\w+)(\?.+)$")
_SPEC_RE = re.compile(r"^([^\[]+)(?:\[(.*)\])?\s*$", re.DOTALL)
_SPEC_OPTION_RE = re.compile(
    r"""\s*([\w\-_\.]+)=(?:"([^"]*)"|'([^']*)'|([^,\]]*))(?:,|\]\s*\[|$|(?P<wrngA>.+))|,?\s*$|(?P<wrngB>.+)""",
    re.DOTALL,
)
_MAX_TAG_REPLACE_COUNT = 25


def parsers_dir() -> Path:
    """The directory of maillens's own rule files (``maillens.parsers``)."""
    from maillens import parsers

    return Path(parsers.__file__).resolve().parent


# --------------------------------------------------------------------------- spec


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``'postfix[mode=aggressive]'`` -> ``('postfix', {'mode': 'aggressive'})``.

    The syntax is fail2ban's (``name[a=1, b="x, y"][c='z']``).
    """
    m = _SPEC_RE.match(spec.strip())
    if m is None or not m.group(1).strip():
        raise FilterError(f"filter spec {spec!r} is not NAME or NAME[key=value, ...]")
    params: dict[str, str] = {}
    for om in _SPEC_OPTION_RE.finditer(m.group(2) or ""):
        if om.group("wrngA") or om.group("wrngB"):
            bad = (om.group("wrngA") or om.group("wrngB"))[:25]
            raise FilterError(f"filter spec {spec!r}: cannot read parameters at {bad!r}; use key=value, ...")
        if om.group(1):
            params[om.group(1).strip()] = next(v for v in om.group(2, 3, 4) if v is not None).strip()
    return m.group(1).strip(), params


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


class _Interpolation(configparser.BasicInterpolation):
    """ConfigParser's ``%(x)s`` plus fail2ban's ``%(section/x)s`` and ``%(__name__)s``."""

    def _interpolate_some(self, parser, option, accum, rest, section, map, depth):  # type: ignore[no-untyped-def]
        if section:
            map = map.copy()
            map["__name__"] = section
            parser.map_section_refs(section, rest, map)
        return super()._interpolate_some(parser, option, accum, rest, section, map, depth)


class _Config(configparser.ConfigParser):
    """One parsed file, or the merge of a filter's files."""

    def __init__(self) -> None:
        super().__init__(interpolation=_Interpolation(), inline_comment_prefixes=(";",))

    def map_section_refs(self, section: str, rest: str, refs) -> None:  # type: ignore[no-untyped-def]
        """Put the raw values of ``%(sec/opt)s`` references into the interpolation map."""
        if "/" not in rest or "%(" not in rest:
            return
        for ref, opt in _SECTION_OPTSUBST_RE.findall(rest):
            if ref in refs:
                continue
            sec = ref[: -len(opt) - 1]
            lowered = sec.lower()
            value = None
            if lowered == "known":
                value = self._sections.get("KNOWN/" + section, {}).get(opt)
            elif lowered != "default":
                if sec not in self._sections:
                    continue
                value = self._sections[sec].get(opt)
            if value is None:
                value = self._defaults.get(opt)
            if value is not None:
                refs[ref] = value

    def get_ex(self, section: str, option: str, vars: dict[str, str]) -> str:
        """An option by plain name or ``section/option`` (``known/`` first tries overridden values)."""
        m = _SECTION_OPTNAME_RE.search(option) if "/" in option else None
        if m:
            sec, opt = m.groups()
            lowered = sec.lower()
            candidates = ("KNOWN/" + section, section) if lowered == "known" else (
                (sec,) if lowered != "default" else ("DEFAULT",))
            for candidate in candidates:
                try:
                    return self.get(candidate, opt)
                except (configparser.NoSectionError, configparser.NoOptionError):
                    pass
        return self.get(section, option, vars=vars)


class _FileSet:
    """Reads a filter's files with their includes and merges them (fail2ban's order)."""

    def __init__(self) -> None:
        self.merged = _Config()
        self._parsed: dict[str, _Config | None] = {}

    def parse(self, path: str) -> _Config | None:
        if path not in self._parsed:
            cfg = _Config()
            try:
                with open(path, encoding="utf-8") as fh:
                    cfg.read_file(fh, source=path)
            except OSError:
                cfg = None  # type: ignore[assignment]
            except UnicodeDecodeError:
                raise FilterError(f"{path}: not UTF-8 text") from None
            except configparser.Error as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise FilterError(f"{path}: not a valid fail2ban config file ({first})") from None
            self._parsed[path] = cfg
        return self._parsed[path]

    @staticmethod
    def with_local(paths: list[str]) -> list[str]:
        out = []
        for path in paths:
            out.append(path)
            local = os.path.splitext(path)[0] + ".local"
            if local not in paths and os.path.isfile(local):
                out.append(local)
        return out

    def includes(self, paths: list[str], seen: list[str]) -> list[str]:
        out: list[str] = []
        for path in self.with_local(paths):
            out += self._includes_of(path, seen)
        return out

    def _includes_of(self, path: str, seen: list[str]) -> list[str]:
        cfg = self.parse(path)
        if cfg is None:
            return []
        lists: dict[str, list[str]] = {"before": [], "after": []}
        if cfg.has_section("INCLUDES"):
            names = set(cfg.options("INCLUDES"))  # its own and [DEFAULT]'s, as fail2ban asks
            for key, found in lists.items():
                if key not in names:
                    continue
                try:
                    value = cfg.get("INCLUDES", key)
                except configparser.Error as exc:
                    raise FilterError(f"{path}: [INCLUDES] {key}: {exc}") from None
                for name in value.split("\n"):
                    target = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
                    if target in seen:
                        continue
                    found += self.includes([target], seen + [path])
        return lists["before"] + [path] + lists["after"]

    def read(self, paths: list[str]) -> list[str]:
        """Merge ``paths`` (with includes) into ``merged``; the files actually read."""
        read: list[str] = []
        sections = self.merged._sections  # type: ignore[attr-defined]
        for path in self.includes(paths, []):
            cfg = self.parse(path)
            if cfg is None:
                continue
            read.append(path)
            self.merged._defaults.update(cfg._defaults)  # type: ignore[attr-defined]
            for name, options in cfg._sections.items():  # type: ignore[attr-defined]
                options = dict(options)
                cond = _CONDITIONAL_RE.match(name)
                if cond:
                    name, suffix = cond.groups()
                    options = {k + suffix: v for k, v in options.items() if k != "__name__"}
                current = sections.get(name)
                if isinstance(current, dict):
                    known = sections.setdefault("KNOWN/" + name, {})
                    known.update({k: v for k, v in current.items() if k in options})
                    current.update(options)
                else:
                    sections[name] = dict(options)
        return read


def filter_files(path: Path) -> list[str]:
    """``name.conf``, ``name.d/*.conf``, ``name.local``, ``name.d/*.local`` that exist."""
    base = os.path.splitext(str(path))[0]
    files = [base + ".conf", *sorted(glob.glob(glob.escape(base + ".d") + "/*.conf")),
             base + ".local", *sorted(glob.glob(glob.escape(base + ".d") + "/*.local"))]
    return [f for f in files if os.path.exists(f)]


# --------------------------------------------------------------------------- options and tags


def substitute_tags(tags: dict[str, str], ignore: set[str], lookup) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """fail2ban's recursive ``<tag>`` substitution; unknown tags stay as they are."""
    tags = dict(tags)
    done: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    while True:
        repeat = False
        for tag in list(tags):
            if tag in ignore or tag in done:
                continue
            value = original = str(tags[tag])
            seen = counts.get(tag, {})
            m = _TAG_RE.search(value)
            while m:
                name = m.group(1)
                if name in ignore:
                    m = _TAG_RE.search(value, m.end())
                    continue
                if name == tag or seen.get(name, 1) > _MAX_TAG_REPLACE_COUNT:
                    raise FilterError(f"tag <{tag}> refers to itself (through <{name}>)")
                repl = tags.get(name)
                if repl is None:
                    repl = lookup(name)
                if repl is None:
                    m = _TAG_RE.search(value, m.end())
                    continue
                value = value.replace(f"<{name}>", str(repl))
                seen[name] = seen.get(name, 0) + 1
                m = _TAG_RE.search(value, m.start())
            if value != original:
                if _TAG_RE.search(value):
                    counts[tag] = seen
                    repeat = True
                tags[tag] = value
            if "<" not in value:
                done.add(tag)
        if not repeat:
            return tags


def _get(cfg: _Config, section: str, option: str, where: str, vars: dict[str, str] | None = None) -> str:
    """An interpolated option; a broken ``%(x)s`` is a FilterError naming the file."""
    try:
        return cfg.get(section, option, vars=vars)
    except (configparser.InterpolationError, configparser.ParsingError) as exc:
        raise FilterError(f"{where}: [{section}] {option}: {str(exc).splitlines()[0]}") from None


def combined_options(cfg: _Config, params: dict[str, str], where: str) -> tuple[dict[str, str], dict[str, str]]:
    """fail2ban's FilterReader: the regex options, with parameters and ``[Init]`` applied.

    Returns ``(options, vars)``: the tag-substituted options fail2ban would
    send to its server, and the variables (parameters) used for ``%(x)s``.
    """
    init = dict(params)
    if not init.get("logtype") and "logtype" not in cfg._sections.get("Definition", {}):  # type: ignore[attr-defined]
        init["logtype"] = "file"  # what fail2ban sets for a file backend
    variables = dict(init)
    opts: dict[str, str | None] = {}
    for name in _CONFIG_OPTS:
        if name in variables:
            continue
        try:
            opts[name] = _get(cfg, "Definition", name, where, variables)
        except configparser.NoSectionError:
            opts[name] = None
        except configparser.NoOptionError:
            pass
    if cfg.has_section("Init"):
        for opt in list(cfg._sections["Init"]):  # type: ignore[attr-defined]
            value = None
            if not opt.startswith("known/"):
                value = _get(cfg, "Init", opt, where)
                init["known/" + opt] = value
            if opt not in init:
                init[opt] = value if value is not None else _get(cfg, "Init", opt, where)
    combined = {**opts, **init}
    ignore = {m.group(1) for n in combined if (m := _CONDITIONAL_RE.match(n))}
    cache: dict[str, str | None] = {}

    def lookup(tag: str) -> str | None:
        if tag not in cache:
            try:
                cache[tag] = cfg.get_ex("Definition", tag, variables)
            except (configparser.NoSectionError, configparser.NoOptionError, ValueError):
                cache[tag] = None
            except configparser.Error as exc:
                raise FilterError(f"{where}: <{tag}>: {str(exc).splitlines()[0]}") from None
        return cache[tag]

    present = {k: v for k, v in combined.items() if v is not None}
    return substitute_tags(present, ignore, lookup), variables


def _definition_options(cfg: _Config, variables: dict[str, str]) -> dict[str, str]:
    """Every ``[Definition]``/``[DEFAULT]`` option, interpolated (for maillens's own keys)."""
    out: dict[str, str] = {}
    for opt in cfg.options("Definition") if cfg.has_section("Definition") else ():
        try:
            out[opt] = cfg.get("Definition", opt, vars=variables)
        except configparser.Error:
            continue  # an option fail2ban never reads may be unusable; the regex options are checked
    return out


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

    text: str  # after tag substitution, before host-tag resolution (what fail2ban-regex prints)
    pattern: re.Pattern[str]
    index: int
    annotations: dict[str, str] = field(default_factory=dict)
    alt_names: tuple[tuple[str, str], ...] = ()
    tuple_names: tuple[tuple[str, str], ...] = ()
    captures: frozenset[str] = frozenset()  # group names from <F-NAME> tags (and alt_/tuple_ targets)

    @property
    def anchored(self) -> bool:
        return _ANNOTATION_RE.sub("", self.pattern.pattern).startswith("^")

    def groups(self, m: re.Match[str]) -> dict[str, object]:
        """The match's groups, ``alt_x_N`` merged into ``x`` and ``tuple_x`` joined, as fail2ban does."""
        found: dict[str, object] = m.groupdict()
        for name, target in self.alt_names:
            value = found.get(name)
            if value and not found.get(target):
                found[target] = value
        for name, target in self.tuple_names:
            value = found.get(name)
            current = found.get(target)
            found[target] = (current + (value,)) if isinstance(current, tuple) else (current, value)
        return found


def compile_regex(text: str, index: int, *, where: str, use_dns: str = "yes", multiline: bool = False) -> FilterRegex:
    expanded = resolve_host_tags(text, use_dns)
    if expanded.lstrip() == "":
        raise FilterError(f"{where}: regex {index + 1} is empty")
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
    alts, tuples = [], []
    for name in compiled.groupindex:
        cm = _COMPLEX_NAME_RE.match(name) if len(name) > 4 else None
        if cm:
            target = cm.group(2).lower()
            (alts if cm.group(1) == "alt_" else tuples).append((name, _TAG_MAP.get(target, target)))
    captures = {_TAG_MAP.get(n.lower(), n.lower()) for n in _FCAPTURE_RE.findall(text)}
    captures |= {target for _, target in alts + tuples}
    return FilterRegex(text, compiled, index, annotations, tuple(sorted(alts)), tuple(sorted(tuples)),
                       frozenset(captures & (set(compiled.groupindex) | {t for _, t in alts + tuples})))


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
    datepattern: str | None = None
    use_dns: str = "warn"
    files: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}[{', '.join(f'{k}={v}' for k, v in self.params.items())}]"

    detector: "DateDetector | None" = field(default=None, repr=False, compare=False)

    def date_detector(self) -> "DateDetector":
        """fail2ban's date detector for this filter, built on first use.

        Only fail2ban-order matching needs it; classifying with the joined rules
        never does, and building the templates costs every command ~20 ms.
        """
        if self.detector is None:
            from maillens.datedetect import DateDetector

            self.detector = DateDetector.for_datepattern(self.datepattern)
        return self.detector

    def matcher(self) -> "Matcher":
        """A matcher that keeps fail2ban's state between lines (line buffer, multi-line ids)."""
        from maillens.filtermatch import Matcher

        return Matcher(self)

    def match_line(self, line: str) -> "FilterMatch | None":
        """What fail2ban reports for this line alone (no state from earlier lines)."""
        return _matcher_class()(self).match_line(line)

    def match_text(self, text: str) -> "FilterMatch | None":
        """Match text that has no time stamp (fail2ban's view after the date is cut out)."""
        return _matcher_class()(self).match_parts(("", "", text))


@lru_cache(maxsize=1)
def _matcher_class() -> type:
    from maillens.filtermatch import Matcher

    return Matcher


def _regex_lines(value: str | None) -> list[str]:
    return [line for line in (value or "").split("\n") if line != ""]


def _build(path: Path, params: dict[str, str]) -> Filter:
    where = str(path)
    files = _FileSet()
    read = files.read(filter_files(path) or [str(path)])
    if not read:
        raise FilterError(f"filter file {path} cannot be read")
    cfg = files.merged
    options, variables = combined_options(cfg, params, where)
    all_options = {**_definition_options(cfg, variables), **options}
    use_dns = (options.get("usedns") or "warn").lower()
    if use_dns not in ("yes", "warn", "no", "raw"):
        use_dns = "no"  # fail2ban's "safe" choice for a bad value
    try:
        maxlines = int(options["maxlines"]) if options.get("maxlines") is not None else 1
    except ValueError:
        maxlines = 1  # fail2ban warns and keeps its default
    if maxlines <= 0:
        raise FilterError(f"{where}: maxlines must be a whole number greater than zero")
    pref_text = options.get("prefregex")
    prefregex = compile_regex(pref_text, 0, where=where, use_dns=use_dns) if pref_text else None
    failregex = [compile_regex(t, i, where=where, use_dns=use_dns, multiline=maxlines > 1)
                 for i, t in enumerate(_regex_lines(options.get("failregex")))]
    ignoreregex = [compile_regex(t, i, where=where, use_dns=use_dns)
                   for i, t in enumerate(_regex_lines(options.get("ignoreregex")))]
    pref_id = prefregex is not None and any(g in prefregex.pattern.groupindex for g in _FAILURE_ID_PRESENT)
    for rx in failregex:
        if not pref_id and not any(g in rx.pattern.groupindex for g in _FAILURE_ID_PRESENT):
            raise FilterError(f"{where}: failregex {rx.index + 1} has no <HOST>, <ADDR> or <F-ID> group: {rx.text}")
    datepattern = options.get("datepattern")
    if datepattern is not None:
        from maillens.datedetect import templates_for

        try:
            templates_for(datepattern)
        except ValueError as exc:
            raise FilterError(f"{where}: {exc}") from None
    name = path.name[: -len(path.suffix)] if path.suffix in (".conf", ".local") else path.name
    return Filter(name, path, params, all_options, prefregex, failregex, ignoreregex, maxlines,
                  datepattern, use_dns, tuple(read))


@lru_cache(maxsize=128)
def _load_cached(spec: str, search_dirs: tuple[Path, ...]) -> Filter:
    name, params = parse_spec(spec)
    return _build(find_filter_file(name, search_dirs), params)


def load_filter(spec: str, search_dirs: Iterable[Path | str] = ()) -> Filter:
    """Load a filter by spec: ``'postfix[mode=aggressive]'``, a path, or a ``parsers/`` name."""
    return _load_cached(spec, tuple(Path(d) for d in search_dirs))


def __getattr__(name: str) -> object:  # FilterMatch and Matcher moved to maillens.filtermatch
    if name in ("FilterMatch", "Matcher"):
        return getattr(__import__("maillens.filtermatch", fromlist=[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
