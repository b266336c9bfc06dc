"""The paper protocol (docs/fidelity.md): datasets in their real Hub layouts and their prompts, tool I/O under
"paper" and
"clean", and the grading table. Expected values are derived by hand from the original's rules."""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data
import models
import reward
import rollout
import tools
from sandbox import ExecResult


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def content(p):
    return p["prompt_messages"][0]["content"]

# -----------------------------------------------------------------------------
# datasets: tiny parquet files laid out like Gen-Verse/Open-AgentRL-Eval, -30K and -SFT-3K


@pytest.fixture
def eval_repo(tmp_path):
    write(tmp_path / "aime2024/aime_2024_problems.parquet",
          [{"ID": "2024-I-1", "Problem": "Find m+n.", "Answer": 204, "data_source": "AIME2024"}])
    write(tmp_path / "aime2025/aime_2025_problems.parquet", [{"problem": "Find k.", "answer": "70"}])
    write(tmp_path / "gpqa-diamond/gpqa_diamond.parquet",
          [{"problem": "Which particle? A) e B) mu C) tau D) nu", "solution": "C", "domain": "Physics",
            "data_source": "gpqa_diamond"}])
    tests = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}
    write(tmp_path / "livecodebench-v6/lcb_v6_2502_2505.parquet",
          [{"problem": "Add two numbers.", "data_source": "LiveCodeBench_v6", "ability": "code",
            "reward_model": json.dumps({"ground_truth": tests, "style": "rule"}),
            "extra_info": json.dumps({"index": 11, "difficulty": "easy"})}])
    return tmp_path


def test_eval_layouts_prompts_and_ground_truths(eval_repo):
    a24 = data.load_eval_data("aime24", str(eval_repo))
    a25 = data.load_eval_data("aime25", str(eval_repo / "aime2025/aime_2025_problems.parquet"))  # a single file
    for p, q, gt, src in ((a24[0], "Find m+n.", "204", "AIME2024"), (a25[0], "Find k.", "70", "AIME2025")):
        assert content(p).startswith("Analyze and solve the following math problem step by step. \n\n" + q)
        assert content(p).endswith("the answer format must be: \\boxed{'The final answer goes here.'}.")
        assert "**Note: You should first analyze the problem and form a high-level solution strategy" in content(p)
        assert p["ground_truth"] == gt and p["source"] == src and p["tools"] == tools.TOOLS
    g = data.load_eval_data("gpqa_diamond", str(eval_repo))[0]
    assert content(g).startswith("Analyze and solve the following Physics problem step by step. \n\nWhich particle?")
    assert content(g).endswith("\n Here you need to put the final uppercase letter option of this problem into "
                               "\\boxed{}")
    assert g["ground_truth"] == "C" and reward.grade_gpqa("so \\boxed{C}", g["ground_truth"])
    lcb = data.load_eval_data("livecodebench", str(eval_repo))[0]
    assert content(lcb).startswith("You will be given a question (problem specification) and will generate a correct")
    assert "Add two numbers.\nHere are some input and output examples of the expected code:\nInput:['1 2\\n', " \
           "'3 4\\n']\nOutput:\n['3\\n', '7\\n']" in content(lcb)
    assert "# YOUR CODE HERE\n\"\nBefore sumbit your code" in content(lcb)  # the original's stray quote and typo
    assert lcb["ground_truth"]["outputs"] == ["3\n", "7\n"] and lcb["id"] == "11"
    assert data.source_kind(lcb["source"]) == "code" and data.source_kind(g["source"]) == "gpqa"
    assert tools.TOOLS[0]["function"]["description"] == "A tool for executing code."
    with pytest.raises(SystemExit, match="aime_2024_problems"):
        data.load_eval_data("aime24", str(eval_repo / "gpqa-diamond"))


def test_eval_command_on_a_local_copy_of_the_eval_repo(eval_repo, tmp_path):
    """The README's command on a local copy of the eval repo, as a user types it (short responses so it is quick):
    the report names the paper protocol, the strict grader and the row shaping; LiveCodeBench gets the original
    eval script's overlong buffer of 4,096."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "eval.py", "--bench", "aime25", "--data", str(eval_repo), "--model",
                        "toy:toy_student", "--k", "2", "--max_response_len", "48", "--max_turns", "2", "--n_boot", "50",
                        "--out_dir", str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.load(open(out / "aime25.json"))
    assert (rep["knobs"]["protocol"], rep["knobs"]["grader"], rep["knobs"]["shaping"]) == ("paper", "strict", "row")
    assert rep["knobs"]["tools"] == vars(tools.tool_protocol("paper")) and rep["knobs"]["overlong_buffer"] == 1024
    assert len([json.loads(x) for x in open(out / "aime25.samples.jsonl")]) == 2  # 1 problem x k
    assert "Protocol `paper` (tool I/O), grader `strict`" in open(out / "aime25.md").read()
    import eval as ev
    ev.main(["--bench", "livecodebench", "--data", str(eval_repo), "--model", "toy:tiny", "--k", "1",
             "--max_response_len", "32", "--max_turns", "1", "--n_boot", "10", "--out_dir", str(out)])
    assert json.load(open(out / "livecodebench.json"))["knobs"]["overlong_buffer"] == 4096


def test_rl_data_prompt_mapping_per_file_and_mixed_source_warning(tmp_path, capsys):
    row = lambda src, q, gt: {"data_source": src, "prompt": [{"role": "user", "content": q}], "ability": "x",
                              "reward_model": {"ground_truth": gt, "style": "rule"}, "extra_info": {"index": q}}
    write(tmp_path / "a/Open-AgentRL-30K.parquet", [row("math_dapo", "Q1", "4"), row("skywork_code", "Q2", "t")])
    probs = data.load_rl_data(str(tmp_path / "a"))
    assert "mixes data sources ['math_dapo', 'skywork_code']" in capsys.readouterr().out
    # the first row's source picks the mapping for the whole file: the code row gets the units note too
    units = "\nDo not put units of the final answer inside \\boxed{}. The content of \\boxed{} should be the numerical"
    assert [content(p) for p in probs] == [q + units + " value of the final answer only, without any units."
                                           for q in ("Q1", "Q2")]
    assert [p["ground_truth"] for p in probs] == ["4", "t"] and probs[1]["source"] == "skywork_code"
    write(tmp_path / "b/x.parquet", [row("deepscaler", "Q3", "1"), row("codecontests_code", "Q4", "t")])
    math, code = data.load_rl_data(str(tmp_path / "b/x.parquet"))
    assert content(math).startswith("Analyze and solve the following math problem step by step. \n\nQ3\n\nThe tool")
    assert content(math).endswith("should be the final numerical value of the final answer only, without any units.")
    assert content(code).startswith("Q4\n\n**Note:") and content(code).endswith("```python\n# YOUR CODE HERE\n```.")
    assert math["extra_info"] == {"index": "Q3"} and math["id"] == "Q3"


def test_unreachable_hub_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as with no network: no cached snapshot, no download
    with pytest.raises(SystemExit, match="cannot fetch the dataset 'no-such-org/no-such-repo'.*pass --data"):
        data.load_eval_data("aime25", "no-such-org/no-such-repo")


def test_sft_layout_and_missing_columns(tmp_path):
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    write(tmp_path / "full_sft_3k_shuffled_v4.parquet", [{"messages": msgs, "tools": json.dumps(tools.TOOLS)}])
    assert data.load_sft_data(str(tmp_path)) == [{"messages": msgs, "tools": tools.TOOLS}]
    write(tmp_path / "g/gpqa-diamond/gpqa_diamond.parquet", [{"problem": "p", "solution": "A"}])
    with pytest.raises(SystemExit, match="lacks column"):
        data.load_eval_data("gpqa_diamond", str(tmp_path / "g"))
    with pytest.raises(SystemExit, match="lacks column"):
        data.load_sft_data(str(tmp_path / "g"))

# -----------------------------------------------------------------------------
# tool I/O


def subprocess_exec(code, timeout, echo=True):
    """A plain-script executor (no echo, like SandboxFusion), independent of sandbox.py."""
    assert not echo, "the paper protocol runs the code as given"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


class Recorder:
    def __init__(self, result=None):
        self.codes, self.result = [], result

    def __call__(self, code, timeout, echo=True):
        self.codes.append((code, timeout, echo))
        return self.result or ExecResult("ok", f"ran {len(self.codes)}\n", "", 0.0)


CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": %s}}\n</tool_call>'
PAPER, CLEAN = tools.tool_protocol("paper"), tools.tool_protocol("clean")


def call(code):
    return CALL % json.dumps(code)


@pytest.mark.parametrize("code, want", [
    ("a = 2\nprint(a)", "a = 2\nprint(a)"),
    ("a = 2\na * 3", "a = 2\nprint(a * 3)"),
    ("x = 5", "print(x = 5)"),
    ("a = 1\na\n\n", "a = 1\nprint(a)\n\n"),  # empty lines are skipped
    ("a = 1\n  ", "a = 1\nprint(  )"),  # a blank but not empty line is not
    ("printer = 3", "printer = 3"),  # textual: starts with "print"
    ("Run it:\n```python\nx = 1\nx + 1\n```\nand ```python\nother\n```", "x = 1\nprint(x + 1)"),  # first block
])
def test_paper_code_fence_and_print_wrap(code, want):
    assert tools.paper_code(code) == want


def test_paper_tool_errors_the_model_sees():
    obs = lambda code: tools.tool_turn(call(code), subprocess_exec, PAPER)["observations"][0]
    assert obs("y = 6 * 7\ny") == "42\n"
    assert "TypeError" in obs("x = 5")  # print(x = 5): the wrap turns an assignment into a bad call
    assert "IndentationError" in obs("for i in range(2):\n    i")  # the wrap drops the indentation
    bad = lambda name, args: tools.tool_turn(f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>',
                                               subprocess_exec, PAPER)
    assert bad("python", '{"code": "1"}')["observations"] == ["Error when executing tool: 'python'"]
    r = bad("code_interpreter", '{"src": "1"}')
    assert r["observations"] == ["Error when executing tool: 'code'"] and r["status"] == ["malformed"]


def test_paper_middle_cut_fixed_texts_and_limits():
    long = "".join(chr(65 + i % 26) for i in range(1000))
    r = tools.tool_turn(call("x"), Recorder(ExecResult("error", long[:600], long[600:], 0.0)), PAPER)
    assert r["observations"] == [long[:128] + "...(truncated)..." + long[-128:]] and r["status"] == ["error"]
    for status in ("timeout", "killed"):
        r = tools.tool_turn(call("x"), Recorder(ExecResult(status, "partial", "", 60.0)), PAPER)
        assert r["observations"] == ["no stdout here"]
    rec = Recorder()
    tools.tool_turn(call("1"), rec, PAPER)
    assert rec.codes == [("print(1)", 60.0, False)]
    assert (PAPER.max_chars, PAPER.timeout, PAPER.memory_mb, PAPER.max_calls) == (256, 60.0, 2048, 1)
    assert tools.tool_protocol("paper", max_chars=None, timeout=5.0).timeout == 5.0


def test_one_call_per_turn_under_paper_every_call_under_clean():
    turn = call("1") + "\n" + call("2") + "\n" + call("3")
    rec = Recorder()
    r = tools.tool_turn(turn, rec, PAPER)
    assert [c for c, _, _ in rec.codes] == ["print(1)"] and r["observations"] == ["ran 1\n"] and not r["end"]
    rec = Recorder()
    r = tools.tool_turn(turn, rec, CLEAN)
    assert sorted(c for c, _, _ in rec.codes) == ["1", "2", "3"] and len(r["observations"]) == 3
    assert all(echo for _, _, echo in rec.codes)  # clean echoes a final bare expression
    assert tools.tool_turn(turn, Recorder(), tools.tool_protocol("paper", max_calls=2))["calls"][1] == \
        {"name": "code_interpreter", "arguments": {"code": "2"}}


@pytest.mark.parametrize("text, paper, clean", [
    ("no call, the answer is \\boxed{1}", None, None),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": "1"}}', None, "unclosed"),  # never closed
    ("<tool_call>{not json}</tool_call>", "end", "not valid JSON"),
    ('<tool_call>{"name": "code_interpreter"}</tool_call>', "end", "must be a JSON object"),  # no arguments key
])
def test_unparsable_turns(text, paper, clean):
    r = tools.tool_turn(text, Recorder(), PAPER)
    assert (r is None) if paper is None else (r["end"] and r["status"] == ["malformed"] and not r["observations"])
    r = tools.tool_turn(text, Recorder(), CLEAN)
    assert (r is None) if clean is None else (not r["end"] and clean in r["observations"][0])


def test_tool_response_ids_paper_has_no_newline_after_im_end():
    tok = models.make_toy_tokenizer()
    clean = tools.tool_response_ids(tok, ["42", "x"], CLEAN)
    paper = tools.tool_response_ids(tok, ["42", "x"], PAPER)
    want = "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\nx\n</tool_response><|im_end|>" \
           "\n<|im_start|>assistant\n"
    assert tok.decode(paper) == want and tok.decode(clean) == "\n" + want and clean[1:] == paper


class Scripted:
    def __init__(self, tok, turns):
        self.tok, self.turns, self.done = tok, turns, []

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        t = self.tok.encode(self.turns[self.tok.decode(ids).count("<tool_response>")], add_special_tokens=False)
        self.done.append((key, t, [-0.5] * len(t), "stop"))

    def poll(self):
        done, self.done = self.done, []
        return done


def test_rollout_paper_ids_and_the_episode_ending_on_an_unparsable_turn():
    tok = models.make_toy_tokenizer()
    prompt = tok.apply_chat_template([{"role": "user", "content": "q"}], tools=tools.TOOLS, add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    turns = [call("6 * 7") + "<|im_end|>", "<tool_call>{oops</tool_call><|im_end|>", "never"]
    ep = rollout.rollout(Scripted(tok, turns), tok, [prompt], max_turns=5, max_response_len=500,
                         execute=subprocess_exec, tools=PAPER)[0]
    assert ep.finish == "malformed" and ep.num_turns == 2 and ep.tool_errors == 1
    assert ep.turns[0]["observations"] == ["42\n"]
    text = tok.decode(ep.ids[len(prompt):])
    assert text == turns[0] + "<|im_start|>user\n<tool_response>\n42\n\n</tool_response><|im_end|>\n" \
                              "<|im_start|>assistant\n" + turns[1]
    assert sum(ep.mask) == sum(len(tok.encode(t, add_special_tokens=False)) for t in turns[:2])

# -----------------------------------------------------------------------------
# grading, derived by hand from math_dapo.py (strict), our normalisation and code_math.py


@pytest.mark.parametrize("text, gt, strict, normalized", [
    ("so \\boxed{42}", "42", True, True),
    ("so \\boxed{42}", 42, False, True),  # strict: with the raw ground truth (tests/test_protocol_round2.py, B)
    ("\\boxed{41} no wait \\boxed{42}", "42", True, True),  # the last box counts
    ("\\boxed{42} no wait \\boxed{41}", "42", False, False),
    ("the answer is 42", "42", False, False),
    ("\\boxed{ 42 }", "42", False, True),  # exact string equality
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True, True),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", False, True),
    ("\\boxed{x = 5}", "5", False, True),
    ("\\boxed{1,000}", "1000", False, True),
    ("\\boxed{7.0}", "7", False, True),
    ("\\boxed{70}", "7", False, False),
    ("\\boxed{{3}", "3", False, False),  # unbalanced
    ("\\boxed{42}" + "." * 90, "42", True, True),  # the box starts exactly 100 characters from the end
    ("\\boxed{42}" + "." * 91, "42", False, True),  # 101: outside the original's window
    ("\\boxed{\\boxed{5}}", "5", True, True),  # rfind: the inner box
])
def test_grade_math_table(text, gt, strict, normalized):
    assert reward.grade_math(text, gt, "strict") is strict
    assert reward.grade_math(text, gt, "normalized") is normalized


@pytest.mark.parametrize("text, gt, want", [("\\boxed{\\frac{1}{2}}", "0.5", True), ("\\boxed{ 42 }", "42", True),
                                            ("\\boxed{43}", "42", False)])
def test_grade_math_verify(text, gt, want):
    pytest.importorskip("math_verify")
    assert reward.grade_math(text, gt, "math_verify") is want


@pytest.mark.parametrize("text, gt, strict, lenient", [
    ("\\boxed{C}", "C", True, True), ("\\boxed{(C)}", "C", False, True), ("\\boxed{c}", "C", False, True),
    ("\\boxed{A}", "C", False, False)])
def test_grade_gpqa_table(text, gt, strict, lenient):
    assert reward.grade_gpqa(text, gt, "strict") is strict and reward.grade_gpqa(text, gt, "normalized") is lenient


def test_strict_grading_sees_the_text_the_original_decodes():
    text = "\\boxed{7}" + "." * 85 + "<|im_end|>"  # 94 characters after skip_special_tokens, 104 before
    assert not reward.grade_math(text, "7")
    assert reward.compute_score("math", text, "7", 1, 10, 100, grader="strict")["acc"]


def py(code):
    return f"<think>\nplan\n</think>\n\nFinal:\n```python\n{code}\n```"


def run_plain(code, timeout, echo=True):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


TWO = {"inputs": ["3\n", "5\n"], "outputs": ["6\n", "11\n"]}


@pytest.mark.parametrize("response, tests, mode, want", [
    (py("n = int(input())\nprint(2 * n)"), TWO, "strict", (0.5, False)),  # a fraction of the tests
    (py("n = int(input())\nprint(2 * n + (n == 5))"), TWO, "strict", (1.0, True)),
    (py("print(6)\nprint()\nprint()"), {"inputs": ["3\n"], "outputs": ["6"]}, "strict", (1.0, True)),  # \n stripped
    (py("print('6 ')"), {"inputs": ["3\n"], "outputs": ["6"]}, "strict", (0.0, False)),  # only newlines are
    (py("import sys\nsys.stdout.write(str(2 * int(input())))"), TWO, "strict", (0.5, False)),  # no echo
    (py("import sys\nprint(2 * int(sys.stdin.buffer.read()))"), TWO, "strict", (0.5, False)),
    (py("print('\\n'.join(map(str, range(3000))))"), {"inputs": [""], "outputs": ["\n".join(map(str, range(3000)))]},
     "normalized", (1.0, True)),  # 13,889 characters, compared whole
    (py("print(2 * int(input()))\nexit(3)"), TWO, "strict", (0.0, False)),  # a non-zero exit fails
    (py("print('\\n'.join(['6']))"), {"inputs": ["3\n"], "outputs": ["6"]}, "strict", (-1.0, False)),  # \\n quirk
    (py("print('\\n'.join(['6']))"), {"inputs": ["3\n"], "outputs": ["6"]}, "normalized", (1.0, True)),
    ("<think>a</think> try ```python\nprint(0)\n``` <think>b</think> final " + py("print(6)")[15:],
     {"inputs": ["3\n"], "outputs": ["6"]}, "strict", (0.0, False)),  # searched: first </think> to the next
    ("<think>a</think> try ```python\nprint(0)\n``` <think>b</think> final " + py("print(6)")[15:],
     {"inputs": ["3\n"], "outputs": ["6"]}, "normalized", (1.0, True)),
    ("no code here", TWO, "strict", (-1.0, False)),
    (py("def f(:"), TWO, "strict", (-1.0, False)),
    (py("class Solution:\n    def add(self, a, b):\n        return a + b"),
     {"inputs": ["1\n2", "[1]\n[2]"], "outputs": ["3", "[1, 2]"], "fn_name": "add"}, "strict", (1.0, True)),
    (py("def add(a, b):\n    return a + b"), json.dumps({"inputs": ["1\n2"], "outputs": ["3"], "fn_name": "add"}),
     "strict", (1.0, True)),  # a JSON string: moved into class Solution (a dict: tests/test_protocol_round2.py, F)
    (py("n = int(input())\nprint(2 * n)"), json.dumps({"inputs": "['3\\n']", "outputs": "['6']"}), "strict",
     (1.0, True)),  # a JSON string holding Python literals
    (py("print(6)"), {"inputs": ["3\n", "5\n"], "outputs": ["6"]}, "strict", (0.0, False)),  # count mismatch: every
    (py("print(6)"), {"inputs": ["3\n", "5\n"], "outputs": ["6"]}, "normalized", (-1.0, False)),  # case fails
    (py("print(6)"), {"inputs": [], "outputs": []}, "strict", (-1.0, False)),  # no case: the original divides by 0
])
def test_grade_code_table(response, tests, mode, want):
    assert reward.grade_code(response, tests, run=run_plain, mode=mode)[:2] == want


@pytest.mark.parametrize("correct, extra, shaping, turns, length, want", [
    (True, None, "row", 3, 100, 1.0),
    (False, None, "row", 3, 100, -1.1),  # the original: num_turns from the row's extra_info, 0 -> -1 - 0.1
    (False, {"num_turns": 6}, "row", 3, 100, -0.8),  # -1 + (6 - 2) / 2 * 0.1
    (False, {"num_turns": 12}, "row", 3, 100, -0.6),  # capped at -0.6
    (False, None, "turns", 1, 100, -1.0),  # agent-loop count 2 * 1 = 2
    (False, None, "turns", 3, 100, -0.8),  # 2 * 3 = 6
    (False, None, "none", 9, 100, -1.0),
    (True, None, "row", 2, 950, 1.0 - 50 / 100),  # overlong: 50 tokens into the last 100 of max 1000
    (False, None, "none", 2, 1000, -2.0),
])
def test_compute_score_shaping(correct, extra, shaping, turns, length, want):
    text = "\\boxed{5}" if correct else "\\boxed{6}"
    r = reward.compute_score("math_dapo", text, "5", turns, length, 1000, overlong_buffer=100, grader="strict",
                             shaping=shaping, extra_info=extra)
    assert r["acc"] is correct and r["score"] == pytest.approx(want) and r["pred"] == text[7]


def test_compute_score_code_fraction_is_not_shaped():
    kw = dict(overlong_buffer=100, run=run_plain, **reward.grading("paper"))
    r = reward.compute_score("LiveCodeBench_v6", py("print(2 * int(input()))"), TWO, 3, 10, 1000, **kw)
    assert r["score"] == 0.5 and not r["acc"]
    r = reward.compute_score("LiveCodeBench_v6", "no code", TWO, 3, 10, 1000, **kw)
    assert r["score"] == pytest.approx(-1.1) and r["pred"] is None
    assert reward.grading("clean", shaping="none") == {"grader": "normalized", "shaping": "none"}
