"""reward.py's rules at their edges, each against what the original (YoungZ365/SOD, livecodebench/code_math.py,
math_dapo.py, the DAPO reward manager) computes or what the docstring promises; these are the cases that mutation
testing (bench/mutate.py, docs/testing.md) found no test for: the class-method fallback of function-style answers,
dict ground truths under the strict grader, which code block and which box count, a disabled overlong buffer, and
unknown graders."""
import json
import subprocess
import sys

import pytest

import reward
from sandbox import ExecResult


def py(code, before=""):
    return f"<think>\nplan\n</think>\n\n{before}```python\n{code}\n```"


def run_plain(code, timeout, echo=True):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


TWICE = json.dumps({"inputs": ["5", "7"], "outputs": ["10", "14"], "fn_name": "twice"})  # no star-imported `twice`


@pytest.mark.parametrize("code, want", [
    ("def twice(x):\n    return 2 * x", (1.0, True)),  # moved into class Solution, `self` put first
    ("def twice(self, x):\n    return 2 * x", (1.0, True)),  # moved, its own `self` kept (not a second one)
    ("import math\n\ndef twice(x):\n    return int(math.fsum([x, x]))", (1.0, True)),  # found after other nodes
    ("def half(x):\n    return x // 2", (-1.0, False)),  # no such function: -1, nothing to run
    ("class Solution:\n    def twice(self, x):\n        return 2 * x", (1.0, True)),  # already a class
])
def test_function_style_answers_under_the_strict_grader(code, want):
    score, acc, graded = reward.grade_code(py(code), TWICE, run=run_plain, mode="strict")
    assert (score, acc) == want
    if want[0] < 0:
        assert graded is None


@pytest.mark.parametrize("mode, want", [("strict", (-1.0, False)), ("normalized", (1.0, True))])
def test_dict_ground_truth_with_fn_name(mode, want):
    # strict: code_math.py str()s a dict ground truth and finds "fn_name" in its repr: -1 without "class Solution",
    # whatever the code (l.196, l.274-316); the lenient grader reads the dict and runs the stdin program
    tests = {"inputs": ["3\n"], "outputs": ["6\n"], "fn_name": None}
    score, acc, code = reward.grade_code(py("print(2 * int(input()))"), tests, run=run_plain, mode=mode)
    assert (score, acc) == want and code == "print(2 * int(input()))\n"


def test_strict_code_is_the_last_block_after_the_first_think():
    text = "<think>\nx\n</think>\n```python\nprint(1)\n```\nNo, this:\n```python\nprint(2)\n```"
    assert reward.extract_code(text, "strict") == "print(2)\n"


def test_strict_grader_reads_the_decoded_text_and_reports_its_own_box():
    # the original decodes without special tokens before its last-100-characters window: a tail of special tokens
    # (here 130 characters of them) does not push the box out of that window
    r = reward.compute_score("math_dapo", "So \\boxed{5}" + "<|endoftext|>" * 10, "5", 1, 10, 20480,
                             grader="strict", shaping="none")
    assert r["acc"] and r["score"] == 1.0
    # the prediction is the strict grader's: a box more than 100 characters before the end is none
    r = reward.compute_score("math_dapo", "So \\boxed{5}" + " and more" * 20, "5", 1, 10, 20480,
                             grader="strict", shaping="none")
    assert not r["acc"] and r["pred"] is None
    assert reward.compute_score("math_dapo", "So \\boxed{5}" + " and more" * 20, "5", 1, 10, 20480,
                                grader="normalized", shaping="none")["pred"] == "5"


@pytest.mark.parametrize("length", [999, 1000, 1001])
def test_no_overlong_shaping_when_the_buffer_is_zero(length):
    r = reward.compute_score("math_dapo", "\\boxed{5}", "5", 1, length, 1000, overlong_buffer=0, grader="strict",
                             shaping="none")
    assert r["score"] == 1.0


def test_a_one_token_buffer_still_shapes():
    r = reward.compute_score("math_dapo", "\\boxed{5}", "5", 1, 1000, 1000, overlong_buffer=1, grader="strict",
                             shaping="none")
    assert r["score"] == 0.0  # 1 token into a 1-token buffer: the whole penalty


def test_unknown_graders_and_shapings_are_refused():
    with pytest.raises(ValueError, match="unknown grader"):
        reward.grade_math("\\boxed{5}", "5", "lenient")
    for kw in (dict(grader="lenient"), dict(shaping="rows")):
        with pytest.raises(ValueError, match="grader must be one of"):
            reward.compute_score("math_dapo", "\\boxed{5}", "5", 1, 10, 1000, **kw)
