"""Native unit tests of app.py's logic, run with the host's CPython (no WebAssembly involved).

    python3 plugins/python-warnings/test_app.py

app.py imports the bindings componentize-py generates for wit/router.wit (`wit_world`,
`componentize_py_types`). These tests generate the stub version of them
(`componentize-py bindings`) into a temporary directory, using the componentize-py that build.sh
installs (run build.sh once first) or the one named by $COMPONENTIZE_PY. The stubs have the real
types; their functions raise NotImplementedError, so `log` and the event are replaced here.
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def componentize_py():
    if os.environ.get("COMPONENTIZE_PY"):
        return [os.environ["COMPONENTIZE_PY"]]
    version = re.search(r"^COMPONENTIZE_PY_VERSION=(\S+)", (HERE / "build.sh").read_text(), re.M)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "fanout" / f"componentize-py-{version.group(1)}"
    if (venv / "bin" / "componentize-py").exists():
        return [str(venv / "bin" / "componentize-py")]
    if (venv / "target").exists():
        os.environ["PYTHONPATH"] = str(venv / "target")
        return [sys.executable, "-c", "import sys; from componentize_py import script; sys.exit(script())"]
    sys.exit(f"componentize-py not found in {venv}: run build.sh first, or set COMPONENTIZE_PY")


_bindings = tempfile.TemporaryDirectory()
subprocess.run(
    componentize_py() + ["-q", "-d", str(REPO / "wit"), "-w", "router", "bindings", _bindings.name],
    check=True,
)
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path[:0] = [_bindings.name, str(HERE)]

import app  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world.imports.types import Destination, Header, LogLevel  # noqa: E402


class FakeEvent:
    """Stands in for the host's `event` resource: only the accessors app.py may call."""

    def __init__(self, event_type, reason="BackOff"):
        self._type, self._reason = event_type, reason

    def event_type(self):
        return self._type

    def reason(self):
        return self._reason


class ConfigTest(unittest.TestCase):
    def assert_refused(self, text, *fragments):
        with self.assertRaises(ValueError) as caught:
            app.parse_config(text)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_defaults_and_valid_topics(self):
        self.assertEqual(app.parse_config("{}"), "k8s-warnings")
        self.assertEqual(app.parse_config(' {"topic": "ops.Warn_ings-1"} '), "ops.Warn_ings-1")
        self.assertEqual(app.parse_config(f'{{"topic": "{"a" * 249}"}}'), "a" * 249)
        self.assertEqual(app.parse_config('{"topic": "..."}'), "...")

    def test_nesting_depth(self):
        self.assertEqual(app.nesting_depth('{"topic": "[[[{{{\\"]]"}'), 1)
        self.assertEqual(app.nesting_depth('[[{"a": [1]}], []]'), 4)
        self.assertEqual(app.nesting_depth("[" * 1000), 33)

    def test_refused(self):
        self.assert_refused("", "invalid JSON")
        self.assert_refused("{", "invalid JSON", "line 1")
        self.assert_refused("[]", "must be a JSON object, not an array")
        self.assert_refused("null", "must be a JSON object, not null")
        self.assert_refused('"x"', "must be a JSON object, not a string")
        self.assert_refused("1.5", "must be a JSON object, not a number")
        self.assert_refused("true", "must be a JSON object, not a boolean")
        self.assert_refused('{"topic": "a", "extra": 1}', "unknown field `extra`", "`topic`")
        self.assert_refused('{"topic": 3}', "field `topic`", "string")
        self.assert_refused('{"topic": null}', "field `topic`", "string")
        self.assert_refused('{"topic": ""}', "field `topic`", "empty")
        self.assert_refused(f'{{"topic": "{"a" * 250}"}}', f'field `topic` "{"a" * 60}..." is 250 characters')
        self.assert_refused('{"topic": "."}', "field `topic`", "not allowed")
        self.assert_refused('{"topic": ".."}', "field `topic`", "not allowed")
        self.assert_refused('{"topic": "a/b"}', "field `topic`", "'/'", "[a-zA-Z0-9._-]")
        self.assert_refused('{"topic": "caf\\u00e9"}', "field `topic`", "'é'")
        self.assert_refused('{"topic": "__consumer_offsets"}', "field `topic`", "__")
        self.assert_refused('{"topic": "a", "topic": "b"}', "`topic` is given twice")
        self.assert_refused('{"topic": "a", "pad": "%s"}' % ("x" * 20_000), "20025 characters long")

    def test_every_problem_is_named(self):
        self.assert_refused(
            '{"topic": "bad topic", "x": 1, "a": 2}',
            "unknown fields `a`, `x`; the known fields are `topic`",
            "; field `topic` \"bad topic\" contains ' '",
        )


class RouteTest(unittest.TestCase):
    def setUp(self):
        self.logged = []
        self._log, app.log = app.log, lambda level, message: self.logged.append((level, message))
        app._topic = None

    def tearDown(self):
        app.log = self._log

    def test_init_and_route(self):
        world = app.WitWorld()
        world.init('{"topic": "warn"}')
        self.assertEqual(self.logged, [(LogLevel.INFO, "routing Warning events to topic 'warn'")])
        self.assertEqual(
            world.route(FakeEvent("Warning", "FailedMount")),
            [Destination("warn", None, [Header("fanout-reason", b"FailedMount")], None)],
        )
        for other in ("Normal", "Critical", "warning", ""):
            self.assertEqual(world.route(FakeEvent(other)), [], other)

    def test_init_error_is_err(self):
        with self.assertRaises(Err) as caught:
            app.WitWorld().init('{"topik": "x"}')
        self.assertIn("unknown field `topik`", caught.exception.value)

    def test_deep_nesting_is_err(self):
        for text in ("[" * 5_000 + "]" * 5_000, '{"topic": ' + "[" * 40 + "]" * 40 + "}"):
            with self.assertRaises(Err) as caught:
                app.WitWorld().init(text)
            self.assertEqual(caught.exception.value, "invalid JSON: nested more than 32 levels deep")

    def test_route_before_init_is_err(self):
        with self.assertRaises(Err) as caught:
            app.WitWorld().route(FakeEvent("Warning"))
        self.assertIn("before a successful init", caught.exception.value)

    def test_unexpected_exception_becomes_err(self):
        class Broken(FakeEvent):
            def reason(self):
                raise KeyError("reason")

        app.WitWorld().init("{}")
        with self.assertRaises(Err) as caught:
            app.WitWorld().route(Broken("Warning"))
        self.assertEqual(caught.exception.value, "KeyError: 'reason'")


if __name__ == "__main__":
    unittest.main()
