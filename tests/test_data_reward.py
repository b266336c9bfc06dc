"""data.py (toy task, prompts, loaders on local files in the Hub layouts) and reward.py (graders, shaping)."""
import json
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data
import reward

# -----------------------------------------------------------------------------
# toy task


def test_toy_problems_are_seeded_and_need_the_tool():
    a, b = data.toy_problems(50, seed=1), data.toy_problems(50, seed=1)
    assert a == b and a != data.toy_problems(50, seed=2)
    for p in a:
        x, y, z = p["args"]
        assert p["ground_truth"] == str(x * y if p["kind"] == "mul" else x * y + z)
        assert int(p["ground_truth"]) >= 1000  # not head arithmetic for a small model
    assert {p["kind"] for p in a} == {"mul", "muladd"}


def test_toy_sft_conversations_run_and_render():
    tok = data.make_toy_tokenizer()
    convs = data.toy_sft_conversations(40, seed=4)
    assert any(m["role"] == "tool" and "Error" in m["content"] for c in convs for m in c["messages"])  # recoveries
    for conv, prob in zip(convs, data.toy_problems(40, seed=4)):
        msgs = conv["messages"]
        for m, nxt in zip(msgs, msgs[1:]):  # each call's code, run for real, prints what the tool message says
            if m.get("tool_calls"):
                code = m["tool_calls"][0]["function"]["arguments"]["code"]
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                assert (r.stdout.strip() if r.returncode == 0 else r.stderr.strip().splitlines()[-1]) == nxt["content"]
        assert reward.grade_math(msgs[-1]["content"], prob["ground_truth"])
        text = tok.apply_chat_template(msgs, tools=conv["tools"], tokenize=False)
        assert text.count('<tool_call>\n{"name": "code_interpreter"') == sum(bool(m.get("tool_calls")) for m in msgs)
        assert len(tok(text)["input_ids"]) < 500


def test_build_prompt_messages():
    m = data.build_prompt_messages("Which?", "gpqa_diamond", options=["x", "y", "z", "w"])
    assert m[0]["role"] == "user" and "A) x\nB) y\nC) z\nD) w" in m[0]["content"] and "letter" in m[0]["content"]
    assert "\\boxed{}" in data.build_prompt_messages("1+1?", "aime25")[0]["content"]
    assert "```python" in data.build_prompt_messages("Write f", "livecodebench")[0]["content"]

# -----------------------------------------------------------------------------
# loaders on local files written in the Hub layouts


def test_load_rl_data_verl_layout(tmp_path):
    rows = [{"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 2+2?"}],
             "ability": "math", "reward_model": {"ground_truth": "4", "style": "rule"},
             "extra_info": {"index": 7}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    probs = data.load_rl_data(str(tmp_path))
    assert probs == [{"prompt_messages": [{"role": "user", "content": "What is 2+2?"}], "ground_truth": "4",
                      "source": "math_dapo", "id": "7"}]


def test_load_sft_and_eval_data(tmp_path):
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with open(tmp_path / "sft.jsonl", "w") as f:
        f.write(json.dumps({"messages": msgs, "tools": json.dumps(data.TOOLS)}) + "\n")
    assert data.load_sft_data(str(tmp_path / "sft.jsonl")) == [{"messages": msgs, "tools": data.TOOLS}]
    (tmp_path / "eval").mkdir()
    pq.write_table(pa.Table.from_pylist([{"question": "Find x.", "answer": "3", "id": "a1"}]),
                   tmp_path / "eval" / "aime25.parquet")
    pq.write_table(pa.Table.from_pylist([{"question": "Q?", "answer": "B", "options": ["1", "2", "3", "4"]}]),
                   tmp_path / "eval" / "gpqa_diamond.parquet")
    aime = data.load_eval_data("aime25", str(tmp_path / "eval"))
    assert len(aime) == 1 and aime[0]["ground_truth"] == "3" and aime[0]["id"] == "a1"
    gpqa = data.load_eval_data("gpqa_diamond", str(tmp_path / "eval"))
    assert "B) 2" in gpqa[0]["prompt_messages"][0]["content"] and gpqa[0]["id"] == "gpqa_diamond-0"
    with pytest.raises(SystemExit, match="aime24"):
        data.load_eval_data("aime24", str(tmp_path / "eval"))
    with pytest.raises(SystemExit, match="lacks column"):
        data.load_sft_data(str(tmp_path / "eval" / "aime25.parquet"))
    with pytest.raises(SystemExit, match="unknown bench"):
        data.load_eval_data("mmlu")

# -----------------------------------------------------------------------------
# graders and the training reward


@pytest.mark.parametrize("text, gt, want", [
    ("so \\boxed{42}", "42", True),
    ("\\boxed{41} no wait \\boxed{42}", "42", True),  # the last box counts
    ("\\boxed{42} no wait \\boxed{41}", "42", False),
    ("the answer is 42", "42", False),  # no box, no credit
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", True),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{\\text{5 degrees}}", "5", True),
    ("\\boxed{ 12 }", "12", True),
    ("\\boxed{$7$}", "7", True),
    ("\\boxed{7.0}", "7", True),
    ("\\boxed{70}", "7", False),
    ("\\boxed{{3}", "3", False),  # unbalanced
])
def test_grade_math(text, gt, want):
    assert reward.grade_math(text, gt) is want


def test_graders_are_fast_on_pathological_text():
    t0 = time.time()
    assert not reward.grade_math("\\boxed{" * 200_000 + "1", "1")
    assert not reward.grade_math("{" * 3_000_000, "1")
    assert reward.grade_math("x" * 5_000_000 + "\\boxed{1}", "1")
    assert time.time() - t0 < 2.0


@pytest.mark.parametrize("text, gt, want", [("\\boxed{B}", "B", True), ("\\boxed{(c)}", "C", True),
                                            ("\\boxed{A}", "B", False), ("B", "B", False)])
def test_grade_gpqa(text, gt, want):
    assert reward.grade_gpqa(text, gt) is want


def subprocess_run(code, timeout):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    from sandbox import ExecResult
    return ExecResult("ok" if r.returncode == 0 else "error", r.stdout, r.stderr, 0.0)


def test_grade_code_stdin_and_functional():
    prog = "Final:\n```python\nn = int(input())\nprint(n * 2)\n```"
    tests = [{"input": "3\n", "output": "6\n", "testtype": "stdin"}, {"input": "5", "output": "10"}]
    assert reward.grade_code(prog, json.dumps(tests), run=subprocess_run)
    assert not reward.grade_code(prog, [{"input": "3\n", "output": "7\n"}], run=subprocess_run)
    fn = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```"
    assert reward.grade_code(fn, [{"input": "1\n2", "output": "3", "testtype": "functional", "fn_name": "add"}],
                             run=subprocess_run)
    assert not reward.grade_code("no code block", [{"input": "", "output": ""}], run=subprocess_run)


@pytest.mark.parametrize("correct, turns, length, want", [
    (True, 3, 100, 1.0),
    (False, 2, 100, -1.0),
    (False, 6, 100, -0.8),  # min(-0.6, -1 + (6 - 2) / 2 * 0.1)
    (False, 12, 100, -0.6),  # capped at -0.6
    (True, 2, 950, 1.0 - 50 / 100),  # overlong: 50 tokens into the last 100 of max 1000
    (False, 2, 1000, -2.0),
])
def test_compute_score(correct, turns, length, want):
    text = "\\boxed{5}" if correct else "\\boxed{6}"
    r = reward.compute_score("math", text, "5", turns, length, 1000, overlong_buffer=100)
    assert r["acc"] is correct and r["score"] == pytest.approx(want) and r["pred"] == text[7]

# -----------------------------------------------------------------------------
# the toy tokenizer fixture


def test_toy_tokenizer_saves_loads_and_round_trips_a_tool_conversation(toy_tokenizer_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(toy_tokenizer_dir)
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
              "<tool_response>", "</tool_response>"):
        assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(t)) == t and len(tok.encode(t)) == 1
    call = lambda code: {"type": "function", "function": {"name": "code_interpreter", "arguments": {"code": code}}}
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 12345 * 678 + 9."},
            {"role": "assistant", "content": "<think>\nmultiply\n</think>\n\n",
             "tool_calls": [call("print(12345*678)")]},
            {"role": "tool", "content": "8369910"},
            {"role": "assistant", "content": "", "reasoning_content": "add, twice", "tool_calls": [
                call("print(8369910 + 9)"), call("x = 'é ünïcode'\nprint(x)")]},
            {"role": "tool", "content": "8369919"}, {"role": "tool", "content": "é ünïcode"},
            {"role": "assistant", "content": "The answer is \\boxed{8369919}."}]
    text = tok.apply_chat_template(msgs, tools=data.TOOLS, tokenize=False)
    # Qwen3's structure: system + tools block, hermes calls, both results grouped in one user turn, thinking kept
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert text.count('<tool_call>\n{"name": "code') == 3
    assert "<|im_start|>user\n<tool_response>\n8369919\n</tool_response>\n<tool_response>\né ünïcode\n" in text
    assert "<think>\nadd, twice\n</think>" in text
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
