"""Rewards: graders for math (\\boxed{} answers), GPQA (option letter) and code (tests in the sandbox), and the
training reward of docs/algorithm.md (±1, DAPO overlong shaping, tool-use shaping of wrong answers).

Three math graders (`grader`): "strict" is the original's check (verl/utils/reward_score/math_dapo.py, called with
strict_box_verify=True by recipe/demystify/reward.py): the last 100 characters, the last `\\boxed{`, exact string
equality, so `\\boxed{ 42 }` is wrong; "normalized" is a lenient DAPO-style normalisation; "math_verify" asks the
math-verify package (`pip install -e ".[math]"`). Graders never raise and return quickly on pathological text.
"""

import ast
import json
import re
from concurrent.futures import ThreadPoolExecutor

import data

TAIL = 20_000  # characters of the response the lenient graders look at: answers are at the end
GRADERS = ("strict", "normalized", "math_verify")
SHAPINGS = ("row", "turns", "none")
CODE_TIMEOUT = 30.0  # seconds per test case (code_math.compute_score's default)
PROTOCOLS = {"paper": dict(grader="strict", shaping="row"), "clean": dict(grader="normalized", shaping="turns")}


def grading(protocol, grader="", shaping=""):
    """compute_score's `grader` and `shaping` for a protocol (docs/fidelity.md), each overridable ("" keeps the
    protocol's)."""
    if protocol not in PROTOCOLS:
        raise SystemExit(f"reward: unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol] | {k: v for k, v in (("grader", grader), ("shaping", shaping)) if v}


# The added tokens Qwen3's tokenizer_config.json marks "special": true (ids 151,643-151,656, models.QWEN3_ADDED[:14]);
# <tool_call>, <think>, <|fim_pad|> and the other 12 added tokens are not special
QWEN3_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_SPECIAL = re.compile("|".join(map(re.escape, QWEN3_SPECIAL)))


def decoded_like_original(text):
    """The response as the original's reward manager sees it: decoded with skip_special_tokens=True
    (verl/workers/reward_manager/dapo.py l.86), which drops Qwen3's 14 special tokens (QWEN3_SPECIAL) and keeps
    <think>, <tool_call>, <|fim_pad|>, ... Done on the text: a model that spells `<|box_end|>` out of ordinary BPE
    pieces keeps it in the original, and loses it here."""
    return _SPECIAL.sub("", text)


def strict_boxed(text):
    """The original's extraction: the last 300 characters, then the last 100 of those; the content of the last
    `\\boxed{` there, or None when there is none or its braces do not close inside the window."""
    s = text[-300:][-100:]
    i = s.rfind("\\boxed{")
    if i < 0:
        return None
    depth = 0
    for j in range(i + 6, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 7:j]
    return None


def extract_boxed(text):
    """Content of the last \\boxed{...} in the tail, or None when there is none or its braces never close."""
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


def grade_math(response_text, ground_truth, mode="strict"):
    """True when the response's final answer equals the ground truth under `mode` (one of GRADERS); strict compares
    with the ground truth as the row holds it, the others with its str()."""
    if mode == "strict":  # against the raw ground truth (math_dapo.py l.217): an int never matches, and a response
        return strict_boxed(response_text) == ground_truth  # without a box matches a None ground truth
    if mode == "normalized":
        pred = extract_boxed(response_text)
        return pred is not None and normalize(pred) == normalize(str(ground_truth))
    if mode != "math_verify":
        raise ValueError(f"reward: unknown grader {mode!r}; choose from {', '.join(GRADERS)}")
    try:
        from math_verify import parse, verify
    except ImportError:
        raise SystemExit("reward: grader math_verify needs the math-verify package: pip install -e '.[math]'") from None
    try:
        return bool(verify(parse(f"\\boxed{{{ground_truth}}}"), parse(response_text[-TAIL:])))
    except Exception:  # its parser and timeouts raise on odd input: that is a wrong answer, not a crash
        return False


def grade_gpqa(response_text, ground_truth, mode="strict"):
    """strict: the math check against the letter, as the original; otherwise a lenient letter match ("(c)" = C)."""
    if mode == "strict":
        return grade_math(response_text, ground_truth, "strict")
    pred = extract_boxed(response_text)
    if pred is None:
        return False
    m = re.fullmatch(r"\(?([A-Da-d])\)?(\W.*)?", normalize(pred))
    return m is not None and m.group(1).upper() == str(ground_truth).strip().upper()

# -----------------------------------------------------------------------------
# Code: the tests of a LiveCodeBench-style problem, each run in the sandbox


def extract_code(text, mode="strict"):
    """The program a response submits: its last ```python block. strict, as the original
    (livecodebench/code_math.py): only the text between the first </think> and the next one is searched, and
    literal "\\n" / "\\t" in the code become a newline / tab (which breaks string literals such as "\\n".join)."""
    if mode != "strict":
        blocks = re.findall(r"```python\n(.*?)```", text[-TAIL:], re.S)
        return blocks[-1] if blocks else None
    part = text.split("</think>")[1] if "</think>" in text else text
    blocks = re.findall(r"```python\n(.*?)```", part, re.S)
    return blocks[-1].replace("\\n", "\n").replace("\\t", "\t") if blocks else None


def as_class_method(code, fn_name):
    """The original's fallback for a function-style answer to a class-style test: move the top-level function
    `fn_name` into `class Solution` (with a `self`); None when there is no such function."""
    tree = ast.parse(code)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn_name), None)
    if fn is None:
        return None
    if not (fn.args.args and fn.args.args[0].arg == "self"):
        fn.args.args.insert(0, ast.arg(arg="self"))
    cls = ast.parse("class Solution:\n    pass").body[0]
    cls.body = [fn]
    tree.body = [n for n in tree.body if n is not fn] + [cls]
    return ast.unparse(ast.fix_missing_locations(tree))


# One test case as one program: the input sits on a real fd 0 and the output is captured from a real fd 1 (memfds),
# so input(), sys.stdin.buffer, open(0) and os.write(1, ...) all work, and the whole output is compared inside the
# sandbox, never cut by the executor's output cap. The verdict goes to the original stdout. Function-style tests
# (fn_name) call the function on the JSON lines of the input and print its result as the original's wrapper does
# (verl/utils/reward_score/sandbox_fusion/utils.py), with the same star imports.
_HARNESS = r'''import os, sys, io, json, threading
_src, _inp, _want, _fn = {src!r}, {inp!r}, {out!r}, {fn!r}
_verdict = os.dup(1)
_i, _o = os.memfd_create("stdin"), os.memfd_create("stdout")
os.write(_i, _inp.encode()); os.lseek(_i, 0, 0); os.dup2(_i, 0); os.dup2(_o, 1)
sys.stdin, sys.stdout = open(0, closefd=False), open(1, "w", closefd=False)
_ns = {{"__name__": "__main__", "__builtins__": __builtins__}}
if _fn:
    for _m in "string re datetime collections heapq bisect copy math random statistics itertools functools " \
              "operator io sys json builtins typing".split():
        exec(f"from {{_m}} import *\nimport {{_m}}", _ns)
try:
    exec(compile(_src, "<solution>", "exec"), _ns)
    for _t in threading.enumerate():
        if _t is not threading.main_thread():
            _t.join()
    if _fn:
        _f = _ns[_fn] if _fn in _ns else getattr(_ns["Solution"](), _fn)
        _r = _f(*[json.loads(l) for l in _inp.split("\n")] if _inp.strip() else [])
        print(json.dumps(_r) if isinstance(_r, (dict, list, tuple, bool)) or _r is None else str(_r))
    _ok = True
except SystemExit as e:
    _ok = e.code in (None, 0)
sys.stdout.flush()
os.lseek(_o, 0, 0)
_got = os.read(_o, os.fstat(_o).st_size).decode(errors="replace") if _ok else ""
os.write(_verdict, b"\n__sod_pass__\n" if _ok and _got.rstrip("\n") == _want.rstrip("\n") else b"\n__sod_fail__\n")
'''


def _test_cases(tests):
    """(inputs, outputs, has fn_name key, fn_name) from the ground truth: a dict (or its JSON / Python literal) with
    "inputs" and "outputs" lists (or literals of lists), as check_correctness reads them."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            tests = ast.literal_eval(tests)
    ins, outs = tests["inputs"], tests["outputs"]
    ins, outs = (ast.literal_eval(x) if isinstance(x, str) else x for x in (ins, outs))
    return [str(x) for x in ins], [str(x) for x in outs], "fn_name" in tests, tests.get("fn_name")


def grade_code(response_text, tests, run=None, mode="strict", timeout=CODE_TIMEOUT):
    """-> (score, acc, code): score is the fraction of test cases passed (stdout compared after stripping trailing
    newlines, exit status 0), -1.0 when there is no parsable program or no test case; acc when all pass. Tests with
    more inputs than outputs or fewer score 0 under "strict" (as the original: every case fails), else -1.0. Under
    "strict" a dict ground truth with a `fn_name` key (None too) scores -1 unless the code holds "class Solution".
    `run(code, timeout, echo=False)` is an executor (sandbox.make_executor; its memory limit applies, the original's
    was 1024 MB); the cases run concurrently."""
    code = extract_code(response_text, mode)
    if code is None:
        return -1.0, False, None
    as_dict = mode == "strict" and not isinstance(tests, str)
    try:
        ast.parse(code)
        if as_dict and ("import_prefix" in str(tests) or "fn_name" in str(tests) and "class Solution" not in code):
            # code_math.py l.196 str()s a dict (the LiveCodeBench eval hands one, reward.py l.144) and tests
            # substrings of its repr; l.274-277 give the repr back as a string, l.285 (l.211) index it: a TypeError
            # that l.316 (l.254) score -1, whatever the code
            return -1.0, False, code
        ins, outs, has_fn, fn = _test_cases(tests)
    except (SyntaxError, ValueError, KeyError, TypeError, MemoryError, RecursionError):
        return -1.0, False, code
    # the original moves a top-level function into class Solution when the key is there, even with an empty value;
    # not a dict that got here (check_correctness literal_evals its repr and runs it as it is), nor under clean: the
    # harness finds a top-level function first (moved, `def add` would resolve to the star-imported operator.add)
    if has_fn and not as_dict and mode == "strict" and "class Solution" not in code:
        code = as_class_method(code, fn)
        if code is None:
            return -1.0, False, None
    if not ins:
        return -1.0, False, code
    if len(ins) != len(outs):  # the original's check_correctness fails every case (sandbox_fusion/utils.py): 0
        return (0.0 if mode == "strict" else -1.0), False, code
    if run is None:
        import sandbox
        run = sandbox.run_code
    progs = [_HARNESS.format(src=code, inp=i, out=o, fn=fn or "") for i, o in zip(ins, outs)]
    with ThreadPoolExecutor(max_workers=min(8, len(progs))) as pool:
        results = list(pool.map(lambda p: run(p, timeout, echo=False), progs))
    passed = sum(r.status == "ok" and r.stdout.rstrip().endswith("__sod_pass__") for r in results)
    return passed / len(progs), passed == len(progs), code

# -----------------------------------------------------------------------------
# The training reward


def compute_score(source, response_text, ground_truth, num_turns, response_len, max_response_len,
                  overlong_buffer=1024, overlong_penalty=1.0, run=None, *, grader="normalized", shaping="turns",
                  extra_info=None):
    """The training reward (recipe/demystify/reward.py compute_score + the DAPO reward manager). Graded with
    `grader` (GPQA by the strict check against its letter under "strict"); correct = 1, wrong = -1, code = the
    fraction of tests passed. A negative score gets the tool-use shaping min(-0.6, score + (n - 2) / 2 * 0.1), where
    n is, by `shaping`: "row" (what the original computes) the `num_turns` of the data row's extra_info, 0 when
    absent, so every wrong answer scores -1.1; "turns" the count the original's agent loop makes (user + assistant
    turns + 1 = 2 * num_turns, as its tool turns are always one fewer); "none" no shaping. DAPO overlong shaping
    then subtracts up to `overlong_penalty` linearly over the last `overlong_buffer` tokens before
    max_response_len. The defaults are the clean protocol's; reward.grading(protocol) gives either set.
    `extra_info` is the problem's (data.py keeps the row's)."""
    if grader not in GRADERS or shaping not in SHAPINGS:
        raise ValueError(f"reward: grader must be one of {GRADERS} and shaping one of {SHAPINGS}")
    kind = data.source_kind(source)
    text = decoded_like_original(response_text) if grader == "strict" else response_text
    if kind == "code":
        score, acc, pred = grade_code(text, ground_truth, run=run, mode=grader)
    else:
        acc = grade_gpqa(text, ground_truth, grader) if kind == "gpqa" else grade_math(text, ground_truth, grader)
        score, pred = 1.0 if acc else -1.0, strict_boxed(text) if grader == "strict" else extract_boxed(text)
    if score < 0 and shaping != "none":
        n = int((extra_info or {}).get("num_turns", 0)) if shaping == "row" else 2 * num_turns
        score = min(-0.6, score + (n - 2) / 2 * 0.1)
    expected = max_response_len - overlong_buffer
    if overlong_buffer > 0 and response_len > expected:
        score += min(-(response_len - expected) / overlong_buffer * overlong_penalty, 0.0)
    return {"score": score, "acc": acc, "pred": pred}
