"""Rewards: graders for math (last \\boxed{}), GPQA (option letter) and code (tests in the sandbox), and the
training reward of DESIGN §2 (±1, DAPO overlong shaping, tool-use shaping of wrong answers).

Graders never raise and return quickly on pathological text (megabytes, unbalanced braces): they only scan the
tail of the response.
"""

import json
import re

import data

TAIL = 20_000  # characters of the response the graders look at: answers are at the end


def extract_boxed(text):
    """Content of the last \\boxed{...}, or None when there is none or its braces never close (one linear scan)."""
    text = text[-TAIL:]
    starts = list(re.finditer(r"\\boxed\s*\{", text))
    if not starts:
        return None
    m = starts[-1]
    depth = 1
    for j in range(m.end(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[m.end():j]
    return None


_UNITS = r"(degrees?|cm|km|m|meters?|inches|inch|feet|ft|units?|dollars?|cents?|mph|hours?|minutes?|seconds?|sq)"


def normalize(ans):
    """DAPO-style answer normalisation: after the last '=', without $, spaces, \\text{}, \\left/\\right, units,
    thousands separators and a trailing period."""
    s = ans.split("=")[-1]
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"\\(left|right|displaystyle|!|,|;|:)", "", s)
    s = s.replace("$", "").replace("dfrac", "frac").replace("tfrac", "frac").replace("^{\\circ}", "")
    s = re.sub(r"\s+", "", s)
    s = re.sub(_UNITS + r"(\^\d)?$", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def grade_math(response_text, ground_truth):
    pred = extract_boxed(response_text)
    return pred is not None and normalize(pred) == normalize(str(ground_truth))


def grade_gpqa(response_text, ground_truth):
    pred = extract_boxed(response_text)
    if pred is None:
        return False
    m = re.fullmatch(r"\(?([A-Da-d])\)?(\W.*)?", normalize(pred))
    return m is not None and m.group(1).upper() == str(ground_truth).strip().upper()


def extract_code(text):
    blocks = re.findall(r"```python\n(.*?)```", text[-TAIL:], re.S)
    return blocks[-1] if blocks else None


def grade_code(response_text, tests, run=None, timeout=6.0):
    """All test cases pass. `tests`: a list (or JSON string) of {"input", "output"} stdin/stdout cases, optionally
    with "testtype": "functional" and a `fn_name` (call the function on the JSON-decoded input lines)."""
    code = extract_code(response_text)
    if code is None:
        return False
    if run is None:
        import sandbox
        run = sandbox.run_code
    try:
        tests = json.loads(tests) if isinstance(tests, str) else tests
        if isinstance(tests, dict):
            tests = [dict(zip(tests, v)) for v in zip(*tests.values())] if "inputs" not in tests else \
                [{"input": i, "output": o, "fn_name": tests.get("fn_name")} for i, o in
                 zip(tests["inputs"], tests["outputs"])]
        for t in tests:
            if t.get("testtype") == "functional" or t.get("fn_name"):
                args = ", ".join(line for line in str(t["input"]).splitlines() if line.strip())
                fn = ("Solution()." if "class Solution" in code else "") + t["fn_name"]
                prog = f"{code}\nprint(repr({fn}({args})))"
                res = run(prog, timeout)
                ok = res.status == "ok" and res.stdout.strip() == repr(json.loads(t["output"]))
            else:
                res = run(f"import sys, io\nsys.stdin = io.StringIO({str(t['input'])!r})\n{code}", timeout)
                ok = res.status == "ok" and res.stdout.split() == str(t["output"]).split()
            if not ok:
                return False
        return bool(tests)
    except (KeyError, TypeError, ValueError):
        return False


def compute_score(source, response_text, ground_truth, num_turns, response_len, max_response_len,
                  overlong_buffer=1024, overlong_penalty=1.0, run=None):
    """The training reward: +1 correct / -1 wrong; a wrong answer that used tools gets
    min(-0.6, -1 + (num_turns - 2) / 2 * 0.1); DAPO overlong shaping subtracts up to `overlong_penalty` linearly
    over the last `overlong_buffer` tokens before max_response_len."""
    kind = data.source_kind(source)
    if kind == "gpqa":
        acc = grade_gpqa(response_text, ground_truth)
    elif kind == "code":
        acc = grade_code(response_text, ground_truth, run=run)
    else:
        acc = grade_math(response_text, ground_truth)
    score = 1.0 if acc else min(-0.6, -1.0 + (num_turns - 2) / 2 * 0.1)
    expected = max_response_len - overlong_buffer
    if overlong_buffer > 0 and response_len > expected:
        score += min(-(response_len - expected) / overlong_buffer * overlong_penalty, 0.0)
    pred = extract_boxed(response_text) if kind != "code" else extract_code(response_text)
    return {"score": score, "acc": acc, "pred": pred}
