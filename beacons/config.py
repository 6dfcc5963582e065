"""Scanner configuration: one TOML file, validated up front so a bad file fails in one line."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SOURCE_KINDS = ("bluepy", "replay", "simulator")

_ALLOWED = {
    "server": {"url", "timeout_s"},
    "scanner": {"name", "secret", "secret_file", "secret_env"},
    "source": {"kind", "adapter", "file", "speed", "rebase", "scenario", "venue", "x", "y",
               "seed", "emitters", "n", "sigma_db", "floor_dbm"},
    "record": {"file"},
    "uplink": {"batch_max", "batch_age_s", "heartbeat_s", "queue_path", "queue_max_sightings",
               "backoff_cap_s"},
    "filter": {"ibeacon_uuids"},
}  # fmt: skip


# The store server calls a scanner silent 35 s after its last heartbeat, whatever sightings it
# posts meanwhile (scanner_health.SILENT_AFTER_S: its zone goes dark, its occupants' presence
# ends). At most 10 s keeps three heartbeats in that window, so two may be lost without it.
HEARTBEAT_MAX_S = 10.0


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line for the operator."""


@dataclass(frozen=True)
class ScannerConfig:
    """Everything the daemon needs, validated."""

    server_url: str
    scanner: str
    secret: str
    source: dict[str, Any]
    queue_path: str
    record_file: str | None = None
    timeout_s: float = 10.0
    batch_max: int = 200
    batch_age_s: float = 1.0
    heartbeat_s: float = 10.0
    queue_max_sightings: int = 1_000_000
    backoff_cap_s: float = 60.0
    ibeacon_uuids: frozenset[bytes] = frozenset()


def _num(section: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a number between {lo:g} and {hi:g}")
    return value


def _int(section: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a whole number between {lo} and {hi}")
    return value


def _heartbeat(up: dict[str, Any]) -> float:
    try:
        return _num(up, "heartbeat_s", 10.0, 0.1, HEARTBEAT_MAX_S)
    except ConfigError as exc:
        raise ConfigError(
            f"uplink.{exc}: the store server calls a scanner silent 35 s after its last heartbeat"
        ) from None


def _bool(section: dict[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")  # "no" would read as true
    return value


def _str(section: dict[str, Any], key: str, name: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string")
    value = value.strip()
    # These values go into HTTP headers (the scanner's name), paths and log lines: a newline
    # would split a log line or be refused by the HTTP client on every post, never at start.
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ConfigError(f"{name} must not contain control characters (newline, tab...)")
    return value


# A DNS name's labels (underscore too: some internal names carry one), the form requests takes.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _server_url(url: str) -> str:
    """server.url, checked as the uplink will use it: http(s), a DNS name or an IP address, a
    valid port. A bad one was taken at start, and then every post failed, forever."""
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        raise ConfigError("server.url must not contain spaces or control characters")
    try:
        parsed = urlparse(url)
    except ValueError:  # "Invalid IPv6 URL"
        raise ConfigError("server.url has an unclosed or invalid [IPv6 address]") from None
    try:
        port = parsed.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError("server.url has a port that is not a number in 1-65535")
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigError("server.url must be an http(s) URL such as https://store.example:5000")
    if "[" in parsed.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"server.url: {host!r} is not an IPv6 address") from None
        return url
    try:
        labels = host.encode("idna").decode("ascii").removesuffix(".").split(".")
    except UnicodeError:
        labels = [""]
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"server.url: {host!r} is not a host name or IP address")
    return url


def _secret(sc: dict[str, Any], base: Path) -> str:
    given = [k for k in ("secret", "secret_file", "secret_env") if k in sc]
    if len(given) != 1:
        raise ConfigError("scanner: give exactly one of secret, secret_file, secret_env")
    key = given[0]
    if key == "secret":
        raw = _str(sc, "secret", "scanner.secret")
    elif key == "secret_file":
        path = base / _str(sc, "secret_file", "scanner.secret_file")
        try:
            raw = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret_file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret_file {path} is not a hex text file") from None
    else:
        name = _str(sc, "secret_env", "scanner.secret_env")
        raw = os.environ.get(name, "").strip()
        if not raw:
            raise ConfigError(f"environment variable {name} (scanner secret) is not set")
    try:
        if len(bytes.fromhex(raw)) < 16:
            raise ValueError
    except ValueError:
        raise ConfigError("scanner secret must be hex, at least 32 digits") from None
    return raw.lower()


def _source(src: dict[str, Any], base: Path) -> dict[str, Any]:
    kind = src.get("kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"source.kind must be one of {', '.join(SOURCE_KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    if kind == "bluepy":
        adapter = str(src.get("adapter", "hci0")).lower().removeprefix("hci")
        if not adapter.isdigit():
            raise ConfigError("source.adapter must look like hci0 or 0")
        out["adapter"] = int(adapter)
    elif kind == "replay":
        path = base / _str(src, "file", "source.file")
        if not path.is_file():
            raise ConfigError(f"replay capture {path} not found")
        out.update(
            file=str(path),
            speed=_num(src, "speed", 1.0, 0, 1e6),
            rebase=_bool(src, "rebase", True),
        )
    else:
        scenario = src.get("scenario", "demo")
        if not isinstance(scenario, str):
            raise ConfigError("source.scenario must be 'demo' or a JSON scenario file")
        if scenario != "demo":
            scenario = str(base / scenario)
            if not Path(scenario).is_file():
                raise ConfigError(f"scenario file {scenario} not found")
        out.update(
            scenario=scenario,
            venue=_str({"venue": src.get("venue", "salon")}, "venue", "source.venue"),
            x=_num(src, "x", 5.0, -1e4, 1e4),
            y=_num(src, "y", 4.0, -1e4, 1e4),
            seed=_int(src, "seed", 0, 0, 2**31),
            emitters=_int(src, "emitters", 4, 0, 10_000),
            n=_num(src, "n", 2.7, 1.0, 6.0),
            sigma_db=_num(src, "sigma_db", 3.0, 0.0, 30.0),
            floor_dbm=_num(src, "floor_dbm", -95.0, -130.0, 0.0),
        )
    return out


def _uuids(flt: dict[str, Any]) -> frozenset[bytes]:
    values = flt.get("ibeacon_uuids", [])
    if not isinstance(values, list):
        raise ConfigError("filter.ibeacon_uuids must be a list of UUID strings")
    try:
        return frozenset(uuid.UUID(str(v)).bytes for v in values)
    except ValueError:
        raise ConfigError("filter.ibeacon_uuids: not a UUID") from None


def parse_config(doc: dict[str, Any], base: Path) -> ScannerConfig:
    """Validate a parsed TOML document; relative paths are taken from `base`."""
    for section, value in doc.items():
        if section not in _ALLOWED or not isinstance(value, dict):
            raise ConfigError(f"unknown section [{section}]")
        unknown = set(value) - _ALLOWED[section]
        if unknown:
            raise ConfigError(f"unknown key {section}.{sorted(unknown)[0]}")
    server, sc, up = doc.get("server", {}), doc.get("scanner", {}), doc.get("uplink", {})
    url = _server_url(_str(server, "url", "server.url"))
    # 1,000 is the store server's default INGEST_MAX_BATCH: a larger batch would be refused (400)
    batch_max = _int(up, "batch_max", 200, 1, 1_000)
    queue_max = _int(up, "queue_max_sightings", 1_000_000, 1, 10**9)
    if queue_max < batch_max:
        raise ConfigError("uplink.queue_max_sightings must be at least batch_max")
    record = doc.get("record", {}).get("file")
    if record is not None and not isinstance(record, str):
        raise ConfigError("record.file must be a file name")  # 5 would silently record nothing
    queue_path = up.get("queue_path", "scanner-queue.sqlite")
    if not isinstance(queue_path, str) or not queue_path.strip():
        raise ConfigError("uplink.queue_path must be a file name")
    return ScannerConfig(
        server_url=url.rstrip("/"),
        scanner=_str(sc, "name", "scanner.name"),
        secret=_secret(sc, base),
        source=_source(doc.get("source", {}), base),
        queue_path=str(base / queue_path),
        record_file=str(base / record) if isinstance(record, str) and record else None,
        timeout_s=_num(server, "timeout_s", 10.0, 0.1, 300.0),
        batch_max=batch_max,
        batch_age_s=_num(up, "batch_age_s", 1.0, 0.01, 3600.0),
        heartbeat_s=_heartbeat(up),
        queue_max_sightings=queue_max,
        backoff_cap_s=_num(up, "backoff_cap_s", 60.0, 0.1, 3600.0),
        ibeacon_uuids=_uuids(doc.get("filter", {})),
    )


def load_config(path: str | Path) -> ScannerConfig:
    """Read and validate a scanner TOML file."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8-sig"))  # some editors write a BOM
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {p} is not valid TOML: {str(exc).splitlines()[0]}") from None
    return parse_config(doc, p.resolve().parent)
