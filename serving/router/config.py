"""The router config: the contract between `ondeck route`, the operator and the local runtime.

The operator renders it into a ConfigMap, `ondeck run` writes it into a file, and the router reads
it from that file. All three import this module instead of re-inventing the shape, so a config one
of them writes is one the router accepts. Parsing is strict: an unknown field or a bad value is an
error naming where it is (``variants[1].weight: ...``), because a typo in a routing config silently
ignored is traffic going where nobody meant it to.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ondeck.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110 field-name)


class ConfigError(UserError):
    """A router config that cannot be used; the message names the field and the problem."""


@dataclass(frozen=True)
class Endpoint:
    """One server replica of a variant: its REST and/or gRPC address as ``host:port``."""

    http: str | None = None
    grpc: str | None = None


@dataclass(frozen=True)
class Variant:
    name: str
    version: str | None = None  # the `version` metric label
    weight: int = 0  # percent of the weighted split
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def version_label(self) -> str:
        return self.version or ""


@dataclass(frozen=True)
class Rule:
    """Requests whose ``header`` equals ``exact`` (or matches ``regex``) go to ``variant``."""

    header: str  # lower case: HTTP header names are case-insensitive, gRPC metadata keys lower case
    exact: str | None = None
    regex: str | None = None
    variant: str = ""


@dataclass(frozen=True)
class Sticky:
    """Which request key pins a user to a variant: a header or a cookie (exactly one)."""

    header: str | None = None
    cookie: str | None = None


@dataclass(frozen=True)
class Shadow:
    variant: str
    fraction: float
    timeout_seconds: float = 2.0
    queue_size: int = 1000
    concurrency: int = 32  # mirrored requests in flight at once
    # Mirrored requests wait up to this long and go out together, so that they reach the shadow in the
    # same moment and its adaptive batching merges them; sent one by one, each costs the shadow a model run.
    # 200 ms: on the router benchmark the shadow server's CPU per mirror falls from ~47 us (10 ms) to ~10-13 us (50 ms)
    # to ~5 us, since a merged request costs it ~150 us whatever its rows and ~3 us a row; a burst also goes as
    # soon as a full merged request's rows wait (merging.MAX_MERGED_ROWS).
    burst_seconds: float = 0.2
    merge: bool = True  # V2 JSON mirrors of one burst go as one request (serving/router/merging.py)


@dataclass(frozen=True)
class Retry:
    attempts: int = 2  # tries per variant, each on another endpoint when there is one


@dataclass(frozen=True)
class Ejection:
    consecutive_failures: int = 3
    seconds: float = 10.0


@dataclass(frozen=True)
class Timeouts:
    connect_seconds: float = 1.0
    request_seconds: float = 30.0


@dataclass(frozen=True)
class RouterConfig:
    model: str
    variants: tuple[Variant, ...]
    rules: tuple[Rule, ...] = ()
    sticky: Sticky | None = None
    shadow: Shadow | None = None
    fallback: str | None = None
    retry: Retry = field(default_factory=Retry)
    ejection: Ejection = field(default_factory=Ejection)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def weights(self) -> dict[str, int]:
        return {v.name: v.weight for v in self.variants}

    def with_weights(self, weights: Mapping[str, int]) -> "RouterConfig":
        """The same config with new weights (variants not named keep theirs), validated again.

        What the rollout controller calls at each step.
        """
        unknown = set(weights) - {v.name for v in self.variants}
        if unknown:
            raise ConfigError(f"router config: no variant named {sorted(unknown)[0]!r}")
        d = self.to_dict()
        for v in d["variants"]:
            v["weight"] = weights.get(v["name"], v["weight"])
        return RouterConfig.from_dict(d)

    # --- parsing and writing -------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Any) -> "RouterConfig":
        return _parse(d)

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict (defaults filled in, None left out): ``from_dict(to_dict())`` is equal."""
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RouterConfig":
        return cls.from_text(_read(path), source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "router config") -> "RouterConfig":
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file + rename), so a watching router never reads half a file."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_yaml())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load(path: str | os.PathLike) -> RouterConfig:
    return RouterConfig.load(path)


def _read(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read router config {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


# --- strict parsing: every helper names the field it looks at ---------------------------------


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"router config: {where}: {problem}")


def _mapping(value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _fail(where, f"unknown field {key!r} (expected one of {', '.join(allowed)})")
    for key in required:
        if value.get(key) is None:
            raise _fail(where, f"missing required field {key!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"must be an integer {lo}..{hi}, got {value!r}")
    return value


def _float(value: Any, where: str, lo: float, hi: float, lo_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value <= hi
    ok = ok and (value > lo if lo_open else value >= lo)
    if not ok:
        raise _fail(where, f"must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"must be true or false, got {value!r}")
    return value


def _address(value: Any, where: str) -> str:
    text = _str(value, where)
    host, sep, port = text.rpartition(":")
    host_ok = bool(host) and (not host.startswith("[") or host.endswith("]")) and " " not in host
    if not sep or not host_ok or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(where, f"must be host:port, got {text!r}")
    return text


def _header(value: Any, where: str) -> str:
    text = _str(value, where)
    if not _HEADER.match(text):
        raise _fail(where, f"is not a valid header name: {text!r}")
    return text.lower()


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"must be a list, got {type(value).__name__}")
    return value


def _parse(d: Any) -> RouterConfig:
    top = _mapping(d, "top level", ("model", "variants", "rules", "sticky", "shadow", "fallback", "retry",
                                     "ejection", "timeouts"), required=("model", "variants"))
    model = _str(top["model"], "model")
    variants = tuple(_variant(v, f"variants[{i}]") for i, v in enumerate(_list(top["variants"], "variants")))
    if not variants:
        raise _fail("variants", "needs at least one variant")
    names = [v.name for v in variants]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _fail(f"variants[{i}].name", f"duplicate variant name {name!r}")

    def known(name: Any, where: str) -> str:
        name = _str(name, where)
        if name not in names:
            raise _fail(where, f"no variant named {name!r} (variants: {', '.join(names)})")
        return name

    rules = tuple(_rule(r, f"rules[{i}]", known) for i, r in enumerate(_list(top.get("rules") or [], "rules")))

    sticky = None
    if top.get("sticky") is not None:
        s = _mapping(top["sticky"], "sticky", ("header", "cookie"))
        if (s.get("header") is None) == (s.get("cookie") is None):
            raise _fail("sticky", "needs exactly one of 'header' or 'cookie'")
        sticky = Sticky(header=_header(s["header"], "sticky.header") if s.get("header") is not None else None,
                        cookie=_str(s["cookie"], "sticky.cookie") if s.get("cookie") is not None else None)

    shadow = None
    if top.get("shadow") is not None:
        s = _mapping(top["shadow"], "shadow", ("variant", "fraction", "timeout_seconds", "queue_size", "concurrency",
                                                "burst_seconds", "merge"),
                     required=("variant", "fraction"))
        shadow = Shadow(
            variant=known(s["variant"], "shadow.variant"),
            fraction=_float(s["fraction"], "shadow.fraction", 0.0, 1.0),
            timeout_seconds=_float(s.get("timeout_seconds", Shadow.timeout_seconds), "shadow.timeout_seconds", 0.0, 3600.0),
            queue_size=_int(s.get("queue_size", Shadow.queue_size), "shadow.queue_size", 1, 1_000_000),
            concurrency=_int(s.get("concurrency", Shadow.concurrency), "shadow.concurrency", 1, 1024),
            burst_seconds=_float(s.get("burst_seconds", Shadow.burst_seconds), "shadow.burst_seconds", 0.0, 1.0,
                                 lo_open=False),
            merge=_bool(s.get("merge", Shadow.merge), "shadow.merge"),
        )
        if next(v for v in variants if v.name == shadow.variant).weight != 0:
            raise _fail("shadow.variant", f"variant {shadow.variant!r} gets a share of live traffic (weight > 0); "
                                          "a shadow variant must have weight 0")

    total = sum(v.weight for v in variants)
    if total != 100:
        weights = ", ".join(f"{v.name}={v.weight}" for v in variants)
        raise _fail("variants", f"weights must add up to 100, got {total} ({weights})")

    fallback = known(top["fallback"], "fallback") if top.get("fallback") is not None else None

    retry = Retry()
    if top.get("retry") is not None:
        r = _mapping(top["retry"], "retry", ("attempts",))
        retry = Retry(attempts=_int(r.get("attempts", Retry.attempts), "retry.attempts", 1, 5))

    ejection = Ejection()
    if top.get("ejection") is not None:
        e = _mapping(top["ejection"], "ejection", ("consecutive_failures", "seconds"))
        ejection = Ejection(
            consecutive_failures=_int(e.get("consecutive_failures", Ejection.consecutive_failures),
                                      "ejection.consecutive_failures", 1, 1000),
            seconds=_float(e.get("seconds", Ejection.seconds), "ejection.seconds", 0.0, 3600.0),
        )

    timeouts = Timeouts()
    if top.get("timeouts") is not None:
        t = _mapping(top["timeouts"], "timeouts", ("connect_seconds", "request_seconds"))
        timeouts = Timeouts(
            connect_seconds=_float(t.get("connect_seconds", Timeouts.connect_seconds), "timeouts.connect_seconds", 0.0, 600.0),
            request_seconds=_float(t.get("request_seconds", Timeouts.request_seconds), "timeouts.request_seconds", 0.0, 3600.0),
        )

    return RouterConfig(model=model, variants=variants, rules=rules, sticky=sticky, shadow=shadow,
                        fallback=fallback, retry=retry, ejection=ejection, timeouts=timeouts)


def _variant(d: Any, where: str) -> Variant:
    v = _mapping(d, where, ("name", "version", "weight", "endpoints"), required=("name", "endpoints"))
    name = _str(v["name"], f"{where}.name")
    if not _NAME.match(name):
        raise _fail(f"{where}.name", f"must be 1-63 letters, digits, '-', '_' or '.', got {name!r}")
    version = None
    if v.get("version") is not None:
        version = _str(v["version"], f"{where}.version")
    weight = _int(v.get("weight", 0), f"{where}.weight", 0, 100)
    endpoints = []
    for j, e in enumerate(_list(v["endpoints"], f"{where}.endpoints")):
        ew = f"{where}.endpoints[{j}]"
        e = _mapping(e, ew, ("http", "grpc"))
        if e.get("http") is None and e.get("grpc") is None:
            raise _fail(ew, "needs an 'http' or a 'grpc' address (or both)")
        ep = Endpoint(http=_address(e["http"], f"{ew}.http") if e.get("http") is not None else None,
                      grpc=_address(e["grpc"], f"{ew}.grpc") if e.get("grpc") is not None else None)
        if ep in endpoints:
            raise _fail(ew, "duplicate endpoint")
        endpoints.append(ep)
    if not endpoints:
        raise _fail(f"{where}.endpoints", "needs at least one endpoint")
    return Variant(name=name, endpoints=tuple(endpoints), weight=weight, version=version)


def _rule(d: Any, where: str, known) -> Rule:
    r = _mapping(d, where, ("header", "exact", "regex", "variant"), required=("header", "variant"))
    if (r.get("exact") is None) == (r.get("regex") is None):
        raise _fail(where, "needs exactly one of 'exact' or 'regex'")
    regex = None
    if r.get("regex") is not None:
        regex = _str(r["regex"], f"{where}.regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise _fail(f"{where}.regex", f"invalid regular expression {regex!r}: {exc}") from None
    exact = None
    if r.get("exact") is not None:
        if not isinstance(r["exact"], str):
            raise _fail(f"{where}.exact", f"must be a string, got {r['exact']!r} (quote it in YAML)")
        exact = r["exact"]
    return Rule(header=_header(r["header"], f"{where}.header"), variant=known(r["variant"], f"{where}.variant"),
                exact=exact, regex=regex)
