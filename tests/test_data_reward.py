"""data.py (the toy task, the toy tokenizer) and reward.py (the lenient grader, speed on pathological text); the
paper protocol's datasets, tool I/O and grading table are in test_protocol.py."""
import json
import time

import pytest

import models
import reward
import sandbox
import tools
import toy

# -----------------------------------------------------------------------------
# toy task


def test_toy_problems_are_seeded_and_need_the_tool():
    a, b = toy.toy_problems(50, seed=1), toy.toy_problems(50, seed=1)
    assert a == b and a != toy.toy_problems(50, seed=2)
    for p in a:
        x, y, z = p["args"]
        assert p["ground_truth"] == str(x * y if p["kind"] == "mul" else x * y + z)
        assert int(p["ground_truth"]) >= 1000  # not head arithmetic for a small model
    assert {p["kind"] for p in a} == {"mul", "muladd"}


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_toy_sft_conversations_run_and_render(protocol):
    tok = models.make_toy_tokenizer()
    convs = toy.toy_sft_conversations(40, seed=4, protocol=protocol)
    assert any(m["role"] == "tool" and "Error" in m["content"] for c in convs for m in c["messages"])  # recoveries
    proto = tools.tool_protocol(protocol, max_chars=4096)
    execute = sandbox.make_executor()
    for conv, prob in zip(convs, toy.toy_problems(40, seed=4)):
        msgs = conv["messages"]
        for m, nxt in zip(msgs, msgs[1:]):  # each call, run in the sandbox, reads back as the tool message: what a
            if m.get("tool_calls"):  # rollout under the protocol shows the model for the same turn, byte for byte
                args = m["tool_calls"][0]["function"]["arguments"]
                call = json.dumps({"name": "code_interpreter", "arguments": args})
                turn = tools.tool_turn(f"<tool_call>\n{call}\n</tool_call>", execute, proto)
                assert turn["observations"] == [nxt["content"]]
        assert reward.grade_math(msgs[-1]["content"], prob["ground_truth"])
        text = tok.apply_chat_template(msgs, tools=conv["tools"], tokenize=False)
        assert text.count('<tool_call>\n{"name": "code_interpreter"') == sum(bool(m.get("tool_calls")) for m in msgs)
        assert len(tok(text)["input_ids"]) <= 1024  # configs/toy_sft.py max_length: nothing dropped


# -----------------------------------------------------------------------------
# graders and the training reward


@pytest.mark.parametrize("text, gt, want", [
    ("\\boxed{\\text{5 degrees}}", "5", True),
    ("\\boxed{$7$}", "7", True),
    ("\\boxed{1,000.0}", "1000", True),
    ("\\boxed{5 cm^2}", "5", True),
    ("\\boxed{5x}", "5", False),
])
def test_grade_math_normalized(text, gt, want):  # the strict and normalized table is in test_protocol.py
    assert reward.grade_math(text, gt, "normalized") is want


def test_graders_are_fast_on_pathological_text():
    t0 = time.time()
    for mode in ("strict", "normalized"):
        assert not reward.grade_math("\\boxed{" * 200_000 + "1", "1", mode)
        assert not reward.grade_math("{" * 3_000_000, "1", mode)
        assert reward.grade_math("x" * 5_000_000 + "\\boxed{1}", "1", mode)
    assert time.time() - t0 < 2.0


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
    text = tok.apply_chat_template(msgs, tools=tools.TOOLS, tokenize=False)
    # Qwen3's structure: system + tools block, hermes calls, both results grouped in one user turn, thinking kept
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert text.count('<tool_call>\n{"name": "code') == 3
    assert "<|im_start|>user\n<tool_response>\n8369919\n</tool_response>\n<tool_response>\né ünïcode\n" in text
    assert "<think>\nadd, twice\n</think>" in text
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
