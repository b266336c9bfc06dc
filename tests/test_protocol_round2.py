"""The paper protocol on the cases where it once differed from the original's own code (classes A-J and
the other fields a model controls). Each test names the original's file and line (YoungZ365/SOD @ 110c4b8; the
sandbox: bytedance/SandboxFusion @ 469de08) and asserts what that code computes under "paper", and the sensible
answer under "clean" where they differ. Expected values are derived by hand from that code."""
import json
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data
import reward
import tools
from sandbox import ExecResult

PAPER, CLEAN = tools.tool_protocol("paper"), tools.tool_protocol("clean")


class Recorder:
    """An executor that records (code, timeout) and answers `ran N`."""
    def __init__(self):
        self.calls = []

    def __call__(self, code, timeout, echo=True):
        self.calls.append((code, timeout))
        return ExecResult("ok", f"ran {len(self.calls)}\n", "", 0.0)


def run_plain(code, timeout, echo=True):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


def turn(*bodies):
    return "".join(f"<tool_call>\n{b}\n</tool_call>" for b in bodies)


def call(**arguments):
    return json.dumps({"name": "code_interpreter", "arguments": arguments})


def paper(text, execute=None):
    return tools.tool_turn(text, execute or Recorder(), PAPER)

# -----------------------------------------------------------------------------
# A. skip_special_tokens=True removes Qwen3's 14 special tokens, no others (verl/workers/reward_manager/dapo.py
# l.86; which tokens are special: Qwen3's tokenizer_config.json added_tokens_decoder)


def math_score(text, gt, protocol="paper"):
    return reward.compute_score("math_dapo", text, gt, 1, 10, 4096, **reward.grading(protocol))["score"]


@pytest.mark.parametrize("text, gt, want_paper, want_clean", [
    ("\\boxed{B<|box_end|>}", "B", 1.0, -1.0),  # special: removed before grading
    ("\\boxed{B<|fim_pad|>}", "B", -1.1, -1.0),  # not special in Qwen3: kept (the 1.0 is wrong)
    ("\\boxed{<think>7}", "7", -1.1, -1.0),  # <think> is not special
    ("\\boxed{7}" + "<|vision_pad|>" * 60, "7", 1.0, 1.0),  # 840 characters gone: the box is in the last 100
    ("\\boxed{7}" + "." * 85 + "<|im_end|>", "7", 1.0, 1.0),
    ("\\boxed{7}" + "<tool_call>" * 9, "7", -1.1, 1.0),  # 99 characters kept: the box starts 108 from the end
])
def test_a_special_tokens_removed_as_the_original_decodes(text, gt, want_paper, want_clean):
    assert math_score(text, gt) == pytest.approx(want_paper)
    assert math_score(text, gt, "clean") == pytest.approx(want_clean)


def test_a_the_special_set_is_qwen3s():
    import models
    assert reward.QWEN3_SPECIAL == tuple(models.QWEN3_ADDED[:14])
    assert reward.decoded_like_original("<|im_start|>a<|object_ref_start|>b<|fim_pad|><|file_sep|></think>") == \
        "ab<|fim_pad|><|file_sep|></think>"

# -----------------------------------------------------------------------------
# B. the strict check compares with the raw ground truth (verl/utils/reward_score/math_dapo.py l.217; compute_score
# l.242-262 and recipe/demystify/reward.py l.173 pass it on unchanged)


@pytest.mark.parametrize("text, gt, want_paper, want_clean", [
    ("\\boxed{42}", 42, -1.1, 1.0),
    ("\\boxed{42}", "42", 1.0, 1.0),
    ("\\boxed{0.5}", 0.5, -1.1, 1.0),
    ("\\boxed{42}", ["42"], -1.1, -1.0),
    ("no box here", None, 1.0, -1.0),  # None == None: the original scores a missing box correct
    ("\\boxed{None}", None, -1.1, 1.0),
    ("\\boxed{C}", "C", 1.0, 1.0),
])
def test_b_ground_truth_as_the_row_holds_it(text, gt, want_paper, want_clean):
    assert math_score(text, gt) == pytest.approx(want_paper)
    assert math_score(text, gt, "clean") == pytest.approx(want_clean)
    gpqa = reward.compute_score("gpqa_diamond", text, gt, 1, 10, 4096, **reward.grading("paper"))["score"]
    assert gpqa == pytest.approx(want_paper)  # GPQA takes the same strict check (reward.py l.170-173)

# -----------------------------------------------------------------------------
# D. the call's own `timeout` argument (recipe/demystify/reward.py l.61; sandbox_fusion/utils.py l.115
# `compile_timeout + run_timeout + API_TIMEOUT` before the try, caught at l.319; the server's run_timeout is a wall
# clock, sandbox/runners/base.py l.85). Ours caps it at the protocol's 60 s.


@pytest.mark.parametrize("timeout, want", [
    (5, 5.0), (1.5, 1.5), (True, 1.0), (300, 60.0), (1e9, 60.0),  # honoured; the cap is ours
    ("5", None), (None, None), ([5], None), ({"s": 5}, None),  # `t + t + 10` raises TypeError
    (0, None), (-3, None), (False, None),  # the server times out at once (or requests refuses a total <= 0)
    (1e10, None), (10 ** 400, None),  # requests: a socket timeout past a C timestamp (OverflowError)
])
def test_d_timeout_argument(timeout, want):
    rec = Recorder()
    r = paper(turn(call(code="print(1)", timeout=timeout)), rec)
    if want is None:
        assert r["observations"] == ["no stdout here"] and rec.calls == [] and not r["end"]
    else:
        assert rec.calls == [("print(1)", want)] and r["observations"] == ["ran 1\n"]
    rec = Recorder()  # clean ignores it
    tools.tool_turn(turn(call(code="print(1)", timeout=timeout)), rec, CLEAN)
    assert rec.calls == [("print(1)", 10.0)]


def test_d_non_finite_timeouts():
    for body in ('{"name": "code_interpreter", "arguments": {"code": "1", "timeout": NaN}}',
                 '{"name": "code_interpreter", "arguments": {"code": "1", "timeout": Infinity}}'):
        assert paper(turn(body))["observations"] == ["no stdout here"]


def test_d_timeout_ends_a_slow_run():
    r = paper(turn(call(code="import time\ntime.sleep(2)\nprint('ok')", timeout=1)), executor())
    assert r["observations"] == ["no stdout here"] and r["status"] == ["timeout"]
    r = paper(turn(call(code="import time\ntime.sleep(2)\nprint('ok')", timeout=5)), executor())
    assert r["observations"] == ["ok\n"]
    r = tools.tool_turn(turn(call(code="import time\ntime.sleep(2)\nprint('ok')", timeout=1)), executor(), CLEAN)
    assert r["observations"] == ["ok"]


def executor():
    import sandbox
    return sandbox.make_executor(None)

# -----------------------------------------------------------------------------
# E. the call's `language` argument (recipe/demystify/reward.py l.62; sandbox_fusion/utils.py l.96-99 refuse one not
# in SUPPORTED_LANGUAGES, l.34-64). Ours runs "python" only: any other language, including the 28 others a
# SandboxFusion server would run, is answered as the client answers a server that cannot run it.


@pytest.mark.parametrize("language, ran", [
    ("python", True), ("python3", False), ("javascript", False), ("Python", False), (["python"], False),
    (None, False), ("bash", False), ("cpp", False)])
def test_e_language_argument(language, ran):
    rec = Recorder()
    r = paper(turn(call(code="print(1)", language=language)), rec)
    assert (rec.calls == [("print(1)", 60.0)]) is ran
    assert r["observations"] == (["ran 1\n"] if ran else ["no stdout here"])
    rec = Recorder()
    tools.tool_turn(turn(call(code="print(1)", language=language)), rec, CLEAN)
    assert len(rec.calls) == 1  # clean ignores it


def test_e_language_is_checked_after_the_code_and_with_the_timeout():
    r = paper(turn(call(code="print(1)", language="python3", timeout="x")))
    assert r["observations"] == ["no stdout here"]
    r = paper(turn(call(code=5, language="python3")))  # reward.py l.47's regex fails before the language is read
    assert r["observations"] == ["Error when executing tool: expected string or bytes-like object, got 'int'"]
    r = paper(turn(call(code="print(1)", language="python", timeout=2)), rec := Recorder())
    assert rec.calls == [("print(1)", 2.0)]

# -----------------------------------------------------------------------------
# H. a call whose name is not a string is dropped (verl/experimental/agent_loop/tool_parser.py l.29-39 FunctionCall
# has `name: str`, l.98-101 drop any call that fails; tool_agent_loop.py l.158-160 end the episode when none is left,
# l.164 run the first max_parallel_calls of what is left)


@pytest.mark.parametrize("name", [123, None, True, ["code_interpreter"], {"a": 1}, 1.5])
def test_h_name_not_a_string_is_dropped(name):
    bad = json.dumps({"name": name, "arguments": {"code": "print(1)"}})
    r = paper(turn(bad))
    assert r["end"] and r["observations"] == [] and r["status"] == ["malformed"]
    rec = Recorder()
    r = paper(turn(bad, call(code="print(1)")), rec)  # a valid call after it runs
    assert not r["end"] and r["observations"] == ["ran 1\n"] and rec.calls == [("print(1)", 60.0)]
    r = tools.tool_turn(turn(bad), Recorder(), CLEAN)  # clean: an error reply, the episode goes on
    assert not r["end"] and r["observations"][0].startswith("Error: unknown tool")


@pytest.mark.parametrize("arguments, reply", [
    ([1], "list indices must be integers or slices, not str"),
    (None, "'NoneType' object is not subscriptable"),
    (3, "'int' object is not subscriptable"),
    (True, "'bool' object is not subscriptable"),
    (json.dumps({"code": "print(1)"}), "string indices must be integers, not 'str'"),  # a JSON string
    ({}, "'code'"),
    ({"src": "1"}, "'code'"),
    ({"code": None}, "expected string or bytes-like object, got 'NoneType'"),
    ({"code": ["print(1)"]}, "expected string or bytes-like object, got 'list'"),
])
def test_h_arguments_the_tool_cannot_use(arguments, reply):
    """tool_agent_loop.py l.293-297 answer `Error when executing tool: {e}` (reward.py l.46-47 raise these)."""
    r = paper(turn(json.dumps({"name": "code_interpreter", "arguments": arguments})))
    assert r["observations"] == ["Error when executing tool: " + reply] and r["status"] == ["malformed"]


def test_h_error_replies_are_not_cut():
    """tool_agent_loop.py l.293-297 return before the 256-character cut of l.302-310."""
    r = paper(turn(json.dumps({"name": "x" * 300, "arguments": {"code": "1"}})))
    assert r["observations"] == ["Error when executing tool: '" + "x" * 300 + "'"]


@pytest.mark.parametrize("body, want", [
    ('{"name": "code_interpreter", "arguments": {"code": "print(1)"}, "extra": [1]}', "ran 1\n"),  # ignored
    ('{"name": "python", "name": "code_interpreter", "arguments": {"code": "1"}}', "ran 1\n"),  # last wins
    ('\n\n  {"name": "code_interpreter", "arguments": {"code": "1", "other": 2}}  \n', "ran 1\n"),
    ('{"name": "code_interpreter", "arguments": {"code": ""}}', "ran 1\n"),  # runs an empty program
    ('{"name": "code_interpreter", "arguments": {"code": "\\ud800"}}', "no stdout here"),  # the server cannot
])
def test_h_other_fields_a_model_controls(body, want):  # write it to a file (SandboxFusion major.py l.75)
    assert paper(turn(body))["observations"] == [want]


def test_h_empty_code_replies_empty():
    """An empty program prints nothing: the reply is "" (tool_agent_loop.py l.195 `text or ""`)."""
    assert paper(turn(call(code="\n\n")), run_plain)["observations"] == [""]

# -----------------------------------------------------------------------------
# F. a LeetCode-style ground truth handed as a dict (recipe/demystify/reward.py l.144 map_lcb json.loads it):
# verl/utils/reward_score/livecodebench/code_math.py l.196 str()s it, l.274-277 give the repr back as a string,
# l.284 tests the substring "fn_name", l.285 indexes the string (TypeError), l.316 scores -1


def py(code):
    return f"<think>\nplan\n</think>\n\nFinal:\n```python\n{code}\n```"


ADD_FN = {"inputs": ["1\n2"], "outputs": ["3"], "fn_name": "add"}
DEF_ADD = "def add(a, b):\n    return a + b"
CLASS_ADD = "class Solution:\n    def add(self, a, b):\n        return a + b"
STDIN = "a, b = map(int, input().split())\nprint(a + b)"


@pytest.mark.parametrize("code, tests, paper_want, clean_want", [
    (DEF_ADD, ADD_FN, (-1.0, False), (1.0, True)),  # right, and -1 in the original
    (DEF_ADD, json.dumps(ADD_FN), (1.0, True), (1.0, True)),  # as a JSON string: moved into class Solution
    (CLASS_ADD, ADD_FN, (1.0, True), (1.0, True)),
    ("# class Solution\n" + DEF_ADD, ADD_FN, (1.0, True), (1.0, True)),  # no conversion; the wrapper finds add
    (DEF_ADD.replace("+", "-"), ADD_FN, (-1.0, False), (0.0, False)),  # wrong: -1 all the same
    # a JSON string: moved into class Solution, and `add` is then operator.add of the wrapper's star imports
    # (sandbox_fusion/utils.py l.197-254: globals first), so a wrong `add` passes in the original
    (DEF_ADD.replace("+", "-"), json.dumps(ADD_FN), (1.0, True), (0.0, False)),
    (STDIN, {"inputs": ["1 2\n"], "outputs": ["3\n"]}, (1.0, True), (1.0, True)),  # no fn_name: graded
    ("print(6)", {"inputs": ["3\n"], "outputs": ["6"], "note": "see fn_name"}, (-1.0, False), (1.0, True)),  # repr
    ("print(6)", {"inputs": ["3\n"], "outputs": ["6"], "import_prefix": ""}, (-1.0, False), (1.0, True)),  # l.197
])
def test_f_dict_ground_truth(code, tests, paper_want, clean_want):
    assert reward.grade_code(py(code), tests, run=run_plain, mode="strict")[:2] == paper_want
    assert reward.grade_code(py(code), tests, run=run_plain, mode="normalized")[:2] == clean_want


def test_f_the_reward_the_original_gives():
    kw = dict(run=run_plain, **reward.grading("paper"))
    assert reward.compute_score("LiveCodeBench_v6", py(DEF_ADD), ADD_FN, 1, 10, 4096, **kw)["score"] == \
        pytest.approx(-1.1)  # reward.py l.175-177 shape the -1
    assert reward.compute_score("LiveCodeBench_v6", py(CLASS_ADD), ADD_FN, 1, 10, 4096, **kw)["score"] == 1.0

# -----------------------------------------------------------------------------
# G. datasets.map (recipe/demystify/reward.py l.81, l.93) stores map_lcb's dicts as one Arrow struct column: a key
# only some rows have is None in the others, so with F every stdin answer scores -1 once one row has a fn_name


def lcb_file(path, gts, extras=None):
    rows = [{"problem": f"P{i}", "data_source": "LiveCodeBench_v6", "ability": "code",
             "reward_model": json.dumps({"ground_truth": gt, "style": "rule"}),
             "extra_info": json.dumps(extras[i] if extras else {"index": i})} for i, gt in enumerate(gts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


STDIN_GT = {"inputs": ["1 2\n"], "outputs": ["3\n"]}


def test_g_keys_filled_as_arrow_does(tmp_path):
    f = lcb_file(tmp_path / "lcb.parquet", [STDIN_GT, ADD_FN, STDIN_GT],
                 [{"index": 0}, {"index": 1, "difficulty": "easy"}, {}])
    probs = data.load_eval_data("livecodebench", f)
    gt = probs[0]["ground_truth"]
    assert gt == {"inputs": ["1 2\n"], "outputs": ["3\n"], "fn_name": None} and list(gt) == ["inputs", "outputs",
                                                                                          "fn_name"]
    assert probs[1]["ground_truth"] == ADD_FN
    assert probs[0]["extra_info"] == {"index": 0, "difficulty": None}
    assert [p["id"] for p in probs] == ["0", "1", "lcb.parquet-2"]  # a filled index of None is no id
    assert "Input:['1 2\\n']\nOutput:\n['3\\n']" in probs[0]["prompt_messages"][0]["content"]
    answer = py("a,b=map(int,input().split())\nprint(a+b)")
    assert reward.grade_code(answer, gt, run=run_plain, mode="strict")[:2] == (-1.0, False)
    assert reward.compute_score("LiveCodeBench_v6", answer, gt, 1, 10, 4096, run=run_plain,
                                **reward.grading("paper"))["score"] == pytest.approx(-1.1)
    assert reward.grade_code(answer, gt, run=run_plain, mode="normalized")[:2] == (1.0, True)
    commented = py("# class Solution\na,b=map(int,input().split())\nprint(a+b)")
    assert reward.grade_code(commented, gt, run=run_plain, mode="strict")[:2] == (1.0, True)


def test_g_no_key_added_where_no_row_has_it(tmp_path):
    f = lcb_file(tmp_path / "lcb.parquet", [STDIN_GT, {"inputs": ["5 5\n"], "outputs": ["10\n"]}])
    probs = data.load_eval_data("livecodebench", f)
    assert [p["ground_truth"] for p in probs] == [STDIN_GT, {"inputs": ["5 5\n"], "outputs": ["10\n"]}]
    answer = py("a,b=map(int,input().split())\nprint(a+b)")
    assert reward.grade_code(answer, probs[0]["ground_truth"], run=run_plain, mode="strict")[:2] == (1.0, True)


def test_g_rows_that_are_not_one_table_fail_with_the_file(tmp_path):
    f = lcb_file(tmp_path / "lcb.parquet", [STDIN_GT, {"inputs": [[1]], "outputs": ["2"]}])
    with pytest.raises(SystemExit, match="lcb.parquet"):
        data.load_eval_data("livecodebench", f)

# -----------------------------------------------------------------------------
# C. SandboxFusion's runner (sandbox/runners/base.py l.58-106) waits for the process and for EOF on its pipes, and
# its asyncio reader stops reading at 2 x 64 KiB: a stream over 131,072 bytes never ends, the run is
# TimeLimitExceeded and the client answers `no stdout here` (verl/tools/sandbox_fusion_tools.py l.184-189); a stream
# that is not UTF-8 reads `[DecodeError] ...` (sandbox/utils/execution.py l.32-37). Through the tool, so the last line
# starts with print (reward.py l.52-59 would wrap it otherwise). The original answers after the timeout, ours at once.


def sandboxed(code, proto=PAPER):
    r = tools.tool_turn(turn(call(code=code)), executor(), proto)
    return r["observations"][0]


@pytest.mark.parametrize("code, want", [
    ("import sys\nsys.stdout.write('z' * (5 << 20))\nprint('end')", "no stdout here"),  # ours: killed as a flood
    ("print('z' * 200000)", "no stdout here"),
    ("import sys\nsys.stdout.write('z' * 131071)\nprint()", "z" * 128 + "...(truncated)..." + "z" * 127 + "\n"),
    ("import sys\nsys.stdout.write('z' * 131072)\nprint()", "no stdout here"),  # 131,073 bytes
    ("import sys\nsys.stderr.write('e' * 131073)\nprint()", "no stdout here"),
    ("print('a' * 100000); import sys; sys.stderr.write('b' * 100000)", "a" * 128 + "...(truncated)..." + "b" * 128),
    ("print('é' * 65536)", "no stdout here"),  # bytes, not characters: 131,073
    ("import sys\nsys.stdout.buffer.write(b'\\xff')\nprint()",
     "[DecodeError] 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ("import sys\nsys.stdout.buffer.write(b'ok\\xe2\\x82')\nsys.stdout.flush()\nsys.stderr.write('e')\nprint(end='')",
     "[DecodeError] 'utf-8' codec can't decode bytes in position 2-3: unexpected end of datae"),
])
def test_c_output_over_the_runners_buffer(code, want):
    assert sandboxed(code) == want


def test_c_clean_shows_the_cut_output():
    assert sandboxed("print('z' * 200000)", CLEAN).startswith("z" * 1024)
    assert sandboxed("import sys\nsys.stdout.buffer.write(b'\\xff')\nprint()", CLEAN) == "\ufffd"


def test_c_executors_without_bytes():
    """An executor that returns text only (a remote SandboxFusion, which applies these rules itself, or a test's):
    the byte count is taken from the text."""
    big = ExecResult("ok", "é" * 65536 + "!", "", 0.0)  # 131,073 bytes
    assert tools.paper_observation(big, 256) == "no stdout here"
    assert tools.paper_observation(ExecResult("ok", "é" * 65536, "", 0.0), 256) == "é" * 128 + "...(truncated)..." + \
        "é" * 128

# -----------------------------------------------------------------------------
# I. SandboxFusion runs the code as a temporary file (sandbox/runners/major.py l.72-83: a NamedTemporaryFile, prefix
# "tmp", in a TemporaryDirectory under /tmp, `python {f.name}`) on Python 3.10 (runtime/python/
# install-python-runtime.sh l.13), whose tracebacks have no ~^~ lines. The names are random there; ours come from the
# code.


PATH = r'"/tmp/tmp[a-z0-9_]{8}/tmp[a-z0-9_]{8}\.py"'


def test_i_traceback_names_the_file():
    got = sandboxed("x = 1\ny = 0\nprint(x/y)")
    assert re.fullmatch(r'Traceback \(most recent call last\):\n  File ' + PATH + r', line 3, in <module>\n'
                        r'    print\(x/y\)\nZeroDivisionError: division by zero\n', got), got
    assert len(got) == 148 and got == sandboxed("x = 1\ny = 0\nprint(x/y)")  # not cut; the same name again
    assert sandboxed("x = 1\ny = 0\nprint(x/y)", CLEAN).startswith('Traceback (most recent call last):\n  File '
                                                                    '"<code>", line 3')


def test_i_syntax_errors_keep_their_caret():
    got = sandboxed("print(1 +)")
    assert re.fullmatch(r'  File ' + PATH + r', line 1\n    print\(1 \+\)\n             \^\nSyntaxError: invalid '
                        r'syntax\n', got), got


def test_i_every_frame_and_warnings():
    got = sandboxed("def f(a):\n    return a[5]\nprint(f([1, 2]))")
    frames = re.findall(r'  File ("[^"]*"), line (\d), in (\S+)\n    (.*)\n', got)
    assert [f[1:] for f in frames] == [("3", "<module>", "print(f([1, 2]))"), ("2", "f", "return a[5]")]
    assert len({f[0] for f in frames}) == 1 and re.fullmatch(PATH, frames[0][0])
    assert got.endswith("IndexError: list index out of range\n") and "^" not in got and "~" not in got
    got = sandboxed("import warnings\nwarnings.warn('w')\nprint(2)")
    assert re.fullmatch(r'2\n' + PATH[1:-1] + r":2: UserWarning: w\n  warnings.warn\('w'\)\n", got), got


def test_i_names_look_like_tempfiles():
    names = {tools.paper_script(f"print({i})") for i in range(200)}
    assert len(names) == 200 and all(re.fullmatch(PATH[1:-1], n) for n in names)
    assert tools.paper_script("x") == tools.paper_script("x")
