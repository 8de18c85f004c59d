"""Configuration: one TOML file, found in one documented order, read once.

Where settings come from, later ones winning:

1. built-in defaults (in the module that uses each section);
2. ``/etc/maillens/config.toml``;
3. ``$XDG_CONFIG_HOME/maillens/config.toml`` (``~/.config/...``);
4. the file given with ``--config`` (or ``$MAILLENS_CONFIG``), which *replaces*
   2 and 3 rather than adding to them, so a test or a cron job can be exact;
5. ``MAILLENS_<SECTION>_<KEY>`` environment variables (strings);
6. command-line flags.

Each feature module owns its section (``[store]``, ``[report]``, ``[bans]``,
``[suggest]``, ``[postfix]``, ``[parse]``) and validates it; this module only
finds, reads and merges files, and turns TOML errors into one line that names
the file and what to fix.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from maillens.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/maillens/config.toml")


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "maillens" / "config.toml"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the store lives: /var/lib/maillens as root, the XDG state dir otherwise."""
    env = os.environ if environ is None else environ
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "MAILLENS_STATE_DIR" not in env:
        return Path("/var/lib/maillens")
    if env.get("MAILLENS_STATE_DIR"):
        return Path(env["MAILLENS_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "maillens"


@dataclass(frozen=True)
class Settings:
    """Merged configuration; ``section(name)`` gives one table (possibly empty)."""

    data: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    file_data: Mapping[str, Any] = field(default_factory=dict)  # what the files alone say

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self._where()}: [{name}] must be a table, not {type(value).__name__}")
        return dict(value)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.section(section).get(key, default)

    def _where(self) -> str:
        return ", ".join(str(p) for p in self.files) or "configuration"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; create it or drop --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix that line") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; values (including arrays) in ``override`` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("MAILLENS_") or name in ("MAILLENS_CONFIG", "MAILLENS_STATE_DIR"):
            continue
        rest = name[len("MAILLENS_"):].lower()
        if "_" not in rest:
            continue
        section, key = rest.split("_", 1)
        out.setdefault(section, {})[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Find, read and merge configuration as the module docstring describes."""
    env = os.environ if environ is None else environ
    explicit = path or env.get("MAILLENS_CONFIG")
    files: list[Path] = []
    data: dict[str, Any] = {}
    if explicit:
        files.append(Path(explicit))
    else:
        for candidate in (SYSTEM_CONFIG, user_config_path(env)):
            if candidate.is_file():
                files.append(candidate)
    for f in files:
        data = merge(data, read_toml(f))
    file_data = data
    data = merge(data, _env_overrides(env))
    return Settings(data=data, files=tuple(files), file_data=file_data)


#: Every section maillens reads: the validator of the module that owns it, and
#: that module's set of keys (``None``: the validator rejects unknown keys itself).
#: Imported only when the section is present, so a plain run stays cheap.
SECTIONS: dict[str, tuple[str, str | None]] = {
    "parse": ("maillens.sources:parse_settings", "maillens.sources:PARSE_KEYS"),
    "store": ("maillens.config:store_settings", "maillens.config:STORE_KEYS"),
    "report": ("maillens.reporting:report_settings", "maillens.reporting:REPORT_KEYS"),
    "tail": ("maillens.live:tail_settings", "maillens.live:TAIL_KEYS"),
    "bans": ("maillens.banconfig:BanSettings.from_section", None),
    "suggest": ("maillens.suggest:SuggestSettings.from_section", None),
    "postfix": ("maillens.postconf:postfix_settings", None),
}

STORE_KEYS = frozenset({"db", "incomplete_after"})


def store_settings(section: Mapping[str, Any]) -> None:
    """Validate ``[store]`` types (store.py reads the values; it is checked here for every command)."""
    db = section.get("db")
    if db is not None and not isinstance(db, str):
        raise ConfigError(f"[store] db = {db!r}: give the store's file path as a string")
    max_age = section.get("incomplete_after")
    if max_age is not None:
        try:
            ok = float(max_age) > 0 and not isinstance(max_age, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"[store] incomplete_after = {max_age!r}: must be a positive number of seconds")


def _resolve(target: str) -> Any:
    import importlib

    module_name, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


def validate(settings: Settings) -> None:
    """Check every section now, whichever command runs.

    Why every command: a typo in ``[report]`` found only by the morning report
    is found a day late; failing the first command that reads the file names
    the key while the edit is fresh.  Unknown sections and keys are errors in
    files; in the environment only known keys are checked, because
    ``MAILLENS_*`` also carries the contrib scripts' own variables.
    """
    where = settings._where()
    for name, value in settings.file_data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{where}: [{name}] is not a maillens section; known: {', '.join(sorted(SECTIONS))}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be a [{name}] table, not a {type(value).__name__}")
    for name, (validator, keys) in SECTIONS.items():
        if name not in settings.data:
            continue
        section = settings.section(name)
        if keys is not None:
            known = _resolve(keys)
            unknown = sorted(set(settings.file_data.get(name, {})) - known)
            if unknown:
                raise ConfigError(f"{where}: [{name}] has no setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
            section = {k: v for k, v in section.items() if k in known}
        _resolve(validator)(section)
