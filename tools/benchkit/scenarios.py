"""The scenarios of the comparison: the load loadgen sends and the filter each tool applies,
written once in logd's syntax and once in RainerScript."""

from __future__ import annotations

from dataclasses import dataclass

# The JSON scenario tests this field for this value; a dotted path names a nested field
# (rsyslog: $!metadata!region). loadgen spreads records over 4 regions.
JSON_FIELD_TEST = ("metadata.region", "eu-west-1")

# Loadgen's mix: seed 001's apps as services, its default level shares (8% ERROR, 20% WARN).
SERVICES = "payment-service:30,auth-service:25,api-gateway:25,notification-service:20"
LEVELS = "info:70,warn:20,error:8,debug:2"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    logd_match: str                 # a logd route filter; "*" keeps everything
    rsyslog_match: str | None       # a RainerScript condition; None keeps everything
    payload: str = "text"           # loadgen --payload
    size: int = 256                 # payload bytes per record (the LF not counted)
    workers: int = 1                # loadgen processes
    connections: int = 4            # TCP connections per loadgen process

    @property
    def parses_json(self) -> bool:
        """rsyslog needs mmjsonparse before a condition on a JSON field ($!...)."""
        return self.rsyslog_match is not None and "$!" in self.rsyslog_match


def _contains(*words: str) -> str:
    return " or ".join(f'$rawmsg contains "{w}"' for w in words)


def _json_test(path: str, value: str) -> tuple[str, str]:
    return f'{path} == "{value}"', f'$!{path.replace(".", "!")} == "{value}"'


_JSON_LOGD, _JSON_RSYSLOG = _json_test(*JSON_FIELD_TEST)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("basic", "every record to the file", "*", None),
    Scenario("error_filter", "only records with ERROR", "ERROR", _contains("ERROR")),
    Scenario("complex_filter", "(ERROR || WARN) && (user || auth || payment)",
             "(ERROR || WARN) && (user || auth || payment)",
             f"({_contains('ERROR', 'WARN')}) and ({_contains('user', 'auth', 'payment')})"),
    Scenario("json_filter", f"JSON lines, only {_JSON_LOGD}", _JSON_LOGD, _JSON_RSYSLOG,
             payload="json"),
    Scenario("high_frequency", "short lines over 16 connections, every record to the file",
             "*", None, size=100, workers=2, connections=8),
)}


def pick(names: str) -> list[Scenario]:
    """The scenarios a comma-separated list names, in its order; ValueError names an
    unknown one and the known ones."""
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        chosen.append(SCENARIOS[name])
    if not chosen:
        raise ValueError(f"no scenario named (known: {', '.join(SCENARIOS)})")
    return chosen
