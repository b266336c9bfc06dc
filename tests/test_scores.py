"""reward.compute_score on GPQA and code sources (math has its own tests): the grade and the training reward of
right, wrong and unanswered responses, DAPO overlong shaping on top, code run through the executor it is given."""
import json
import subprocess
import sys

import pytest

import reward
from sandbox import ExecResult

ADD = "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```"
SUB = ADD.replace("a + b", "a - b")
CRASH = ADD.replace("print(a + b)", "print(a + c)")
TESTS = json.dumps({"inputs": ["1 2\n", "10 20\n"], "outputs": ["3\n", "30\n"]})  # stdin / stdout cases


def python_executor(log):
    """An executor with the sandbox's call shape that runs the code in a plain subprocess and records it."""
    def run(code, timeout=10.0, **kw):
        log.append(code)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)
    return run


def score(source, text, truth, run=None, response_len=10, max_response_len=1000, buffer=100):
    return reward.compute_score(source, text, truth, 2, response_len, max_response_len, buffer, 1.0, run=run)


@pytest.mark.parametrize("source", ["gpqa_diamond", "gpqa"])
def test_gpqa_letter(source):
    right = score(source, "The mass is conserved, so \\boxed{B}", "B")
    assert right["acc"] is True and right["score"] == 1.0 and right["pred"] == "B"
    for text in ("Hence \\boxed{C}", "Hence \\boxed{B} at first, then \\boxed{D}", "I think it is B."):
        wrong = score(source, text, "B")
        assert wrong["acc"] is False and wrong["score"] < 0, text
    assert score(source, "I think it is B.", "B")["pred"] is None


def test_code_runs_the_tests_through_the_given_executor():
    log = []
    run = python_executor(log)
    right = score("livecodebench", "My program:\n" + ADD, TESTS, run=run)
    assert right["acc"] is True and right["score"] == 1.0
    assert len(log) == 2 and all("a + b" in c for c in log)  # one run per test case, the response's own code
    for text in (SUB, CRASH):  # the score is the fraction of tests passed: none of 2
        res = score("livecodebench", text, TESTS, run=run)
        assert res["acc"] is False and res["score"] == 0.0, text
    half = score("livecodebench", "```python\nprint(3)\n```", TESTS, run=run)  # right on the first case only
    assert half["acc"] is False and half["score"] == 0.5
    log.clear()
    none = score("livecodebench", "I cannot write it.", TESTS, run=run)
    assert none["acc"] is False and none["score"] < 0 and log == []  # no code, nothing to run


def test_overlong_shaping_on_top_of_the_grade():
    # DAPO: no penalty up to max_response_len - buffer, then linear down to -penalty at max_response_len
    # (here 1000 - 100 = 900 tokens free; 950 tokens is halfway into the buffer: -0.5)
    assert score("gpqa_diamond", "\\boxed{A}", "A", response_len=900)["score"] == pytest.approx(1.0)
    assert score("gpqa_diamond", "\\boxed{A}", "A", response_len=950)["score"] == pytest.approx(0.5)
    assert score("gpqa_diamond", "\\boxed{A}", "A", response_len=1000)["score"] == pytest.approx(0.0)
    log = []
    base = score("livecodebench", ADD, TESTS, run=python_executor(log), response_len=10)["score"]
    assert score("livecodebench", ADD, TESTS, run=python_executor(log), response_len=975)["score"] == \
        pytest.approx(base - 0.75)
