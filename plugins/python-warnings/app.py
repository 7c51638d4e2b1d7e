"""Warnings router: a fanout routing plugin written in Python.

It targets the WIT world `router` of `fanout:router@0.2.0` (wit/router.wit) and is built into a
WebAssembly component by componentize-py (see build.sh and README.md).

Routing:

- an event whose `event.type` is `Warning` is written to one topic (`k8s-warnings` unless the
  configuration says otherwise), with the source bytes unchanged (payload none), the source
  record's key (key none) and one header, `fanout-reason`, holding the event's reason;
- every other event is filtered: `route` returns an empty list.

Configuration (`python_warnings.json` beside `python_warnings.wasm`; `{}` when there is none):

    {"topic": "k8s-warnings"}

A document that is not a JSON object (or is nested or long beyond any valid configuration),
unknown or repeated fields, a topic that is not a string, and a topic that breaks Kafka's naming
rules (`[a-zA-Z0-9._-]`, 1 to 249 characters, not `.` or `..`, not an internal `__` topic) are
refused by `init`, naming every problem, so the host refuses the plugin at load with the message.

How componentize-py maps the WIT functions to Python: the world's exports are methods of a class
named `WitWorld` in this module. A WIT `result<T, string>` is the Python return value (`T`) or
the exception `componentize_py_types.Err(message)`, which becomes the `err` variant. Any other
exception escaping an export traps the instance, which the host reports as `plugin-trap` and
answers by starting a fresh instance (for a Python component, the costliest outcome); `route`
therefore turns unexpected exceptions into `Err` too, so a bug dead-letters the event as
`plugin-error: ...` and keeps the instance.
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world import log
from wit_world.imports.types import Destination, Event, Header, LogLevel

#: The topic warnings go to when the configuration does not name one.
DEFAULT_TOPIC = "k8s-warnings"

#: The event type (`event.type`) that is routed; every other type is filtered.
WARNING = "Warning"

#: The header that carries the event's reason.
REASON_HEADER = "fanout-reason"

#: The configuration's fields, each with what it must be.
KNOWN_FIELDS = {"topic": "a Kafka topic name"}

#: Longest configuration accepted, in characters. A valid one is `{"topic": ...}` with a topic of
#: at most 249 characters; the bound keeps the checks below within memory and the call deadline
#: (the host itself accepts a config file of up to 1 MiB).
MAX_CONFIG_CHARS = 16 * 1024

#: Deepest JSON nesting accepted. CPython's C JSON parser recurses once per level, and in
#: WebAssembly it exhausts the call stack (a trap, not a RecursionError) a few thousand levels
#: down; a configuration that deep is a mistake anyway.
MAX_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")

_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# The configured topic. Module state, because componentize-py may create a fresh `WitWorld`
# object for each call; `init` runs once per instance before any `route`.
_topic = None


def topic_problem(topic):
    """Returns what is wrong with `topic` as a Kafka topic name, or None when it is valid."""
    if not topic:
        return "is empty; a Kafka topic name has 1 to 249 characters"
    if len(topic) > 249:
        return f"is {len(topic)} characters long; a Kafka topic name has at most 249"
    if topic in (".", ".."):
        return 'is not allowed: Kafka refuses "." and ".." as topic names'
    bad = sorted(set(topic) - _TOPIC_CHARS)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"contains {shown}; a Kafka topic name may only contain [a-zA-Z0-9._-]"
    if topic.startswith("__"):
        return "starts with `__`, which is reserved for Kafka's internal topics"
    return None


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"field `{key}` is given twice")
        seen[key] = value
    return seen


def _json_type(value):
    for python, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
                         (list, "an array")):
        if isinstance(value, python):
            return name
    return "null"


def nesting_depth(text, limit=MAX_DEPTH):
    """The deepest nesting of `[` and `{` in `text`, outside strings, counted up to `limit + 1`."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
    return deepest


def parse_config(text):
    """Parses and validates the configuration; returns the topic or raises `ValueError` naming
    every problem found."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError(
            f"the configuration is {len(text)} characters long, more than the {MAX_CONFIG_CHARS} "
            'this plugin accepts; it takes one field, as in {"topic": "k8s-warnings"}'
        )
    if nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"invalid JSON: nested more than {MAX_DEPTH} levels deep")
    try:
        config = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"the configuration must be a JSON object, not {_json_type(config)}"
            ' (for example {"topic": "k8s-warnings"})'
        )
    problems = []
    unknown = sorted(set(config) - set(KNOWN_FIELDS))
    if unknown:
        known = ", ".join(f"`{f}` ({what})" for f, what in KNOWN_FIELDS.items())
        names = ", ".join(f"`{f}`" for f in unknown)
        fields = "field" if len(unknown) == 1 else "fields"
        problems.append(f"unknown {fields} {names}; the known fields are {known}")
    topic = config.get("topic", DEFAULT_TOPIC)
    if not isinstance(topic, str):
        problems.append(f"field `topic` must be a string, not {json.dumps(topic)}")
    elif topic_problem(topic):
        shown = json.dumps(topic if len(topic) <= 60 else topic[:60] + "...")
        problems.append(f"field `topic` {shown} {topic_problem(topic)}")
    if problems:
        raise ValueError("; ".join(problems))
    return topic


def route_event(ev: Event, topic: str):
    """The routing decision for one event: a list with one destination, or an empty list."""
    if ev.event_type() != WARNING:
        return []
    reason = ev.reason().encode("utf-8")
    return [
        Destination(
            topic=topic,
            key=None,  # keep the source record's key
            headers=[Header(key=REASON_HEADER, value=reason)],
            payload=None,  # forward the source bytes unchanged
        )
    ]


class WitWorld(wit_world.WitWorld):
    """The exports of the `router` world."""

    def init(self, config: str) -> None:
        global _topic
        try:
            _topic = parse_config(config)
        except ValueError as e:
            raise Err(str(e))
        except Exception as e:  # a bug: refuse the config with a message rather than trap
            raise Err(f"{type(e).__name__}: {e}")
        log(LogLevel.INFO, f"routing {WARNING} events to topic {_topic!r}")

    def route(self, ev: Event) -> list:
        if _topic is None:
            raise Err("route was called before a successful init")
        try:
            return route_event(ev, _topic)
        except Err:
            raise
        except Exception as e:  # a bug: dead-letter the event, keep the instance
            raise Err(f"{type(e).__name__}: {e}")
