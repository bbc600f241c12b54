# SPDX-License-Identifier: Apache-2.0
"""The parts of ferry_sdk that run in plain CPython: declarations and input parsing.

Run with `python3 -m unittest discover -s sdk/python/tests` (the host's tests do).
"""

import errno
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import ferry_sdk as ferry  # noqa: E402


class Sample(ferry.Step):
    name = "sample"
    inputs = [
        ferry.Input("who", "Whom.", default="world"),
        ferry.Input("loud", "Shout.", type=bool, default=False),
        ferry.Input("times", "How often.", type=int, default=1),
        ferry.Input("ratio", "A ratio.", type=float),
        ferry.Input("tags", "Tags.", type=list, default=[]),
        ferry.Input("fail-on-warning", "Strict.", type=bool, required=True),
    ]


class InputsTest(unittest.TestCase):
    def parse(self, **given):
        given.setdefault("fail-on-warning", "false")
        return Sample._parse_inputs(given)

    def test_defaults_and_types(self):
        inputs = self.parse(times="3", tags='["a", "b"]', ratio="0.5")
        self.assertEqual(inputs.who, "world")
        self.assertIs(inputs.loud, False)
        self.assertEqual(inputs.times, 3)
        self.assertEqual(inputs.ratio, 0.5)
        self.assertEqual(inputs.tags, ["a", "b"])
        self.assertIs(inputs.fail_on_warning, False)
        self.assertIs(inputs["fail-on-warning"], False)

    def test_unset_optional_input_is_none(self):
        self.assertIsNone(self.parse().ratio)

    def test_every_problem_is_reported_at_once(self):
        with self.assertRaises(ferry.InvalidInput) as caught:
            Sample._parse_inputs({"loud": "yes", "times": "2.5", "tags": "a,b", "colour": "red"})
        message = str(caught.exception)
        for text in [
            "unknown input `colour`",
            "input `loud` must be `true` or `false`, got `yes`",
            "input `times` must be a whole number, got `2.5`",
            "input `tags` must be a list of strings",
            "input `fail-on-warning` is required",
        ]:
            self.assertIn(text, message)

    def test_an_int_is_a_whole_number_for_the_host_too(self):
        self.assertEqual(self.parse(times=" -7 ").times, -7)
        for bad in ["1e3", "2.0", "", "many"]:
            with self.assertRaises(ferry.InvalidInput, msg=bad):
                self.parse(times=bad)
        # The host checks `with:` against the declared type before the step starts.
        self.assertEqual(ferry._TYPES[int], "INTEGER")
        self.assertEqual(ferry._TYPES[float], "NUMBER")

    def test_a_refused_file_is_one_line_and_a_missing_variable_is_denied(self):
        # The host says which grant was missing and makes the step `denied`.
        said = ferry._refused(PermissionError(errno.EPERM, "Operation not permitted", "out.txt"))
        self.assertEqual(said, "`out.txt`: Operation not permitted")
        self.assertIsNone(ferry._refused(FileNotFoundError(errno.ENOENT, "No such file", "x")))
        self.assertIsNone(ferry._refused(ValueError("x")))
        os.environ.pop("FERRY_SDK_TEST_UNSET", None)
        with self.assertRaises(ferry.Denied) as caught:
            ferry.env("FERRY_SDK_TEST_UNSET")
        self.assertIn("env: [FERRY_SDK_TEST_UNSET]", str(caught.exception))
        self.assertIn("secrets: [FERRY_SDK_TEST_UNSET]", str(caught.exception))
        self.assertEqual(ferry.env("FERRY_SDK_TEST_UNSET", default="d"), "d")
        os.environ["FERRY_SDK_TEST_SET"] = "v"
        self.assertEqual(ferry.env("FERRY_SDK_TEST_SET"), "v")

    def test_undeclared_attribute_is_an_error(self):
        with self.assertRaises(AttributeError):
            self.parse().colour

    def test_bad_declarations_are_refused(self):
        with self.assertRaises(TypeError):
            ferry.Input("x", "x", type=dict)
        with self.assertRaises(TypeError):
            ferry.export(object)

        class Nameless(ferry.Step):
            pass

        with self.assertRaises(TypeError):
            ferry.export(Nameless)

    def test_defaults_are_spelled_as_yaml(self):
        spellings = {i.name: i._spelling(i.default) for i in Sample.inputs if i.default is not None}
        self.assertEqual(
            spellings, {"who": "world", "loud": "false", "times": "1", "tags": "[]"}
        )

    def test_host_calls_say_where_they_work(self):
        with self.assertRaises(RuntimeError):
            ferry.set_output("x", "y")
        with self.assertRaises(RuntimeError):
            ferry.exec("git", "status")


if __name__ == "__main__":
    unittest.main()
