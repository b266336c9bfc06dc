"""Real scale: Qwen3's tokenizer against published ids, the project's chat template against Qwen3's own template on a
table of edge cases, SFT masks and token-in/token-out rollouts on the real vocabulary, the real model shapes, and
the GPU report's dry run."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import models
import rollout
import tools
import toy
import train_sft
from sandbox import ExecResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Qwen3's chat template as released with Qwen/Qwen3-0.6B, verbatim (a copy ships in llama-cpp-python 0.3.36's
# sdist: vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja)
QWEN3_TEMPLATE = open(os.path.join(ROOT, "tests", "qwen3_chat_template.jinja")).read()
HAVE_BPE = os.path.exists(models.QWEN3_BPE)
need_bpe = pytest.mark.skipif(not HAVE_BPE, reason=f"no Qwen BPE ranks at {models.QWEN3_BPE} "
                                                   "(python models.py --fetch_qwen3 downloads them)")


@pytest.fixture(scope="module")
def qtok():
    return models.make_qwen3_tokenizer()


@pytest.fixture(scope="module")
def toy_tok():
    return models.make_toy_tokenizer()

# -----------------------------------------------------------------------------
# The chat template renders byte for byte like Qwen3's


def call(code, wrap=True, as_string=False):
    args = json.dumps({"code": code}) if as_string else {"code": code}
    f = {"name": tools.TOOL_NAME, "arguments": args}
    return {"type": "function", "function": f} if wrap else f


U, S = {"role": "user", "content": "What is 6 * 7?"}, {"role": "system", "content": "You are terse."}
CASES = {  # name: (messages, use tools, add_generation_prompt, enable_thinking)
    "user, generation prompt": ([U], False, True, None),
    "system + user, no tools": ([S, U], False, True, None),
    "tools + system": ([S, U], True, True, None),
    "no thinking": ([U], True, True, False),
    "toy SFT conversation": (toy.toy_sft_conversations(4, seed=3)[1]["messages"], True, False, None),
    # an assistant turn after the last query, not the last message, without reasoning: Qwen3 writes no think block
    "no reasoning, not last": ([U, {"role": "assistant", "content": "", "tool_calls": [call("print(6*7)")]},
                                {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42."}], True,
                               False, None),
    # reasoning and content with surrounding newlines: Qwen3 strips them inside the think block
    "newlines stripped": ([U, {"role": "assistant", "content": "\n\nSo 42.\n", "reasoning_content": "\nr\n\n"}],
                          False, False, None),
    "newlines, not last": ([U, {"role": "assistant", "content": "\nA\n", "reasoning_content": "\nr\n",
                                "tool_calls": [call("1")]}, {"role": "tool", "content": "1"}], True, True, None),
    "think inline in content": ([U, {"role": "assistant", "content": "<think>\nx\n</think>\n\nA."}], False, False,
                                None),
    "empty reasoning keeps inline think": ([U, {"role": "assistant", "content": "<think>x</think>A",
                                                "reasoning_content": ""}], False, False, None),
    "earlier reasoning dropped": ([U, {"role": "assistant", "content": "A", "reasoning_content": "r1"},
                                   {"role": "user", "content": "And 7 * 8?"},
                                   {"role": "assistant", "content": "B", "reasoning_content": "r2"}], False, False,
                                  None),
    "calls: several, string args, unwrapped": ([U, {"role": "assistant", "content": "Let me run both.",
                                                    "tool_calls": [call("a", as_string=True), call("b", wrap=False)]},
                                                {"role": "tool", "content": "x"}, {"role": "tool", "content": "y"}],
                                               True, True, None),
    "calls without content": ([U, {"role": "assistant", "content": "", "reasoning_content": "r",
                                   "tool_calls": [call("print('é 中')")]}], True, False, None),
    "newline content before a call": ([U, {"role": "assistant", "content": "\n", "reasoning_content": "r",
                                           "tool_calls": [call("1")]}], True, False, None),
    "user turn that is a tool response": ([U, {"role": "assistant", "content": "A", "reasoning_content": "r"},
                                          {"role": "user", "content": "<tool_response>\n1\n</tool_response>"},
                                          {"role": "assistant", "content": "B", "reasoning_content": "r2"}],
                                         False, False, None),
    "system in the middle": ([U, {"role": "system", "content": "Be brief."}, U], False, True, None),
    "no user message": ([S, {"role": "assistant", "content": "Hi.", "reasoning_content": "r"}], False, False, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_template_matches_qwen3(toy_tok, name):
    msgs, with_tools, gen, thinking = CASES[name]
    kw = dict(tools=tools.TOOLS if with_tools else None, add_generation_prompt=gen, tokenize=False)
    if thinking is not None:
        kw["enable_thinking"] = thinking
    ours = toy_tok.apply_chat_template(msgs, **kw)
    ref = toy_tok.apply_chat_template(msgs, chat_template=QWEN3_TEMPLATE, **kw)
    assert ours == ref


def test_template_two_fixed_cases_by_hand(toy_tok):
    """The two renderings that used to differ from Qwen3's, written out by hand."""
    msgs, *_ = CASES["no reasoning, not last"]
    text = toy_tok.apply_chat_template(msgs, tokenize=False)
    assert "<|im_start|>assistant\n<tool_call>" in text and text.count("<think>") == 1
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n42.<|im_end|>\n")
    msgs, *_ = CASES["newlines stripped"]
    text = toy_tok.apply_chat_template(msgs, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<think>\nr\n</think>\n\nSo 42.\n<|im_end|>\n")

# -----------------------------------------------------------------------------
# Qwen3's tokenizer


# Expected ids: llama.cpp's tokenizer test for Qwen2's vocabulary (models/ggml-vocab-qwen2.gguf.inp/.out, generated
# with the Hugging Face tokenizer), which Qwen3 shares
IDS = {
    "Hello world": [9707, 1879],
    " Hello, world!": [21927, 11, 1879, 0],
    "    Hello\n    Hello": [262, 21927, 198, 262, 21927],
    "\n =": [198, 284],
    "' era": [6, 11385],
    "333": [18, 18, 18],
    "ied 4 ½ months": [1122, 220, 19, 220, 26062, 3951],
    "Äpfel": [86975, 15897, 301],
    "Cửa Việt": [34, 90063, 128324],
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～":
        [9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257, 16, 18, 16, 19, 16, 20,
         16, 35727, 21216],
}


@need_bpe
def test_qwen3_tokenizer_ids(qtok):
    assert qtok.encode("Hello world!") == [9707, 1879, 0]
    for text, ids in IDS.items():
        assert qtok.encode(text) == ids, text
        assert qtok.decode(ids) == text
    assert len(qtok) == 151669
    expect = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<tool_call>": 151657,
              "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<tool_response>": 151665, "</tool_response>": 151666,
              "<think>": 151667, "</think>": 151668}
    assert {t: qtok.convert_tokens_to_ids(t) for t in expect} == expect
    assert qtok.eos_token == "<|im_end|>" and qtok.pad_token_id == 151643
    # NFC: a decomposed "é" encodes like the composed one
    assert qtok.encode("cafe\u0301") == qtok.encode("caf\u00e9")
    # the tool and think tags are not special: they survive decoding without special tokens
    ids = qtok.encode("<|im_start|>assistant\n<think>\nr\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|>")
    kept = "assistant\n<think>\nr\n</think>\n\n<tool_call>\n{}\n</tool_call>"
    assert qtok.decode(ids, skip_special_tokens=True) == kept
    # special as in Qwen3's tokenizer_config.json: the first 14 added tokens, not the FIM/repo ones
    assert qtok.decode([151662, 151649, 151663], skip_special_tokens=True) == "<|fim_pad|><|repo_name|>"
    assert set(qtok.all_special_tokens) == set(models.QWEN3_ADDED[:14])


CODE = '''import numpy as np

def f(x: int) -> float:
    """Return x / 3."""
    return np.float64(x) / 3  # 0.333...

print(f(12), [f(i) for i in range(3)], {"a": 1e-3, 'b': None})
'''


@need_bpe
def test_qwen3_tokenizer_agrees_with_tiktoken(qtok):
    """An independent BPE implementation (tiktoken) over the same ranks and Qwen2's split gives the same ids on code,
    JSON, LaTeX, whitespace runs, numbers, CJK and a whole rendered tool conversation."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe
    ref = tiktoken.Encoding("qwen", pat_str=models._SPLIT, mergeable_ranks=load_tiktoken_bpe(models.QWEN3_BPE),
                            special_tokens={})
    conv = toy.toy_sft_conversations(2, seed=3, protocol="paper")[1]
    rendered = qtok.apply_chat_template(conv["messages"], tools=conv["tools"], tokenize=False)
    texts = [CODE, '{"name": "code_interpreter", "arguments": {"code": "x = 5\\nprint(x)"}}',
             "\\boxed{\\dfrac{3}{4}} and $\\sqrt{2}$", "a  b\t\tc\n\n\n  d   ", "1234567 3.14159 -0.5e-10",
             "数学题：求 x 的值。答案是 42。", "Traceback (most recent call last):\n  File \"<string>\", line 1"]
    for text in texts:
        assert qtok.encode(text) == ref.encode(text), text
    specials = set(models.QWEN3_ADDED)  # tiktoken is given no added tokens: compare the text between them
    pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", rendered)
    assert qtok.encode(rendered) == [i for p in pieces if p for i in
                                     ([qtok.convert_tokens_to_ids(p)] if p in specials else ref.encode(p))]


@need_bpe
def test_sft_mask_is_exactly_the_assistant_turns(qtok):
    msgs = [U, {"role": "assistant", "content": "", "reasoning_content": "I run it.",
                "tool_calls": [call("print(6*7)")]},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "The answer is \\boxed{42}.", "reasoning_content": "It printed 42."}]
    ids, mask = train_sft.tokenize_conversation(qtok, msgs, tools.TOOLS)
    assert qtok.decode(ids) == qtok.apply_chat_template(msgs, tools=tools.TOOLS, tokenize=False)
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    runs += [cur] if cur else []
    assert [qtok.decode(r) for r in runs] == [
        '<think>\nI run it.\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": {"code": '
        '"print(6*7)"}}\n</tool_call><|im_end|>',
        "<think>\nIt printed 42.\n</think>\n\nThe answer is \\boxed{42}.<|im_end|>"]


class Scripted:
    """An engine that answers each call with the next scripted turn's ids (log-prob -1 per token)."""

    def __init__(self, turns):
        self.turns, self.done = list(turns), []

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        ids = self.turns.pop(0)
        self.done.append((key, ids, [-1.0] * len(ids), "stop"))

    def poll(self):
        done, self.done = self.done, []
        return done

    def sleep(self):
        pass

    def wake_up(self):
        pass


@need_bpe
def test_token_in_token_out_on_real_vocab(qtok):
    """rollout.py assembles prompt + sampled ids + tool-response ids; on Qwen3's vocabulary they equal, token for
    token, the ids of the full conversation rendered by the template (zero drift)."""
    turn1 = '<think>\nI compute.\n</think>\n\n' + \
        '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>'
    turn2 = "<think>\nIt printed 42.\n</think>\n\nThe answer is \\boxed{42}. 你好"
    engine = Scripted([qtok.encode(turn1 + "<|im_end|>"), qtok.encode(turn2 + "<|im_end|>")])
    prompt = qtok.apply_chat_template([U], tools=tools.TOOLS, add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
    ep = rollout.rollout(engine, qtok, [prompt], max_turns=4, max_response_len=512,
                         execute=lambda code, timeout=10.0, echo=True: ExecResult("ok", "42\n", "", 0.01))[0]
    obs = ep.turns[0]["observations"][0]  # what the tool protocol made of the sandbox's "42\n"
    full = qtok.apply_chat_template([U, {"role": "assistant", "content": turn1},
                                     {"role": "tool", "content": obs}, {"role": "assistant", "content": turn2}],
                                    tools=tools.TOOLS, tokenize=True, return_dict=False)
    assert ep.finish == "answer" and ep.num_tool_calls == 1 and "42" in obs
    assert ep.ids == full[:len(ep.ids)] and qtok.decode(full[len(ep.ids):]) == "\n"
    assert rollout.retokenize_drift([ep], qtok) == 0.0

# -----------------------------------------------------------------------------
# The real shapes


@pytest.mark.parametrize("name,total,non_embedding", [("qwen3-0.6b", 0.6e9, 0.44e9), ("qwen3-1.7b", 1.7e9, 1.4e9),
                                                      ("qwen3-4b", 4.0e9, 3.6e9)])
def test_real_shapes_match_the_model_cards(name, total, non_embedding):
    from transformers import AutoModelForCausalLM
    cfg = models.qwen3_config(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())  # tied: the lm_head shares the embedding
    emb = model.model.embed_tokens.weight.numel()
    assert model.lm_head.weight is model.model.embed_tokens.weight and emb == 151936 * cfg.hidden_size
    # the model cards' rounded counts (total, non-embedding)
    assert abs(n - total) / total < 0.03
    assert abs((n - emb) - non_embedding) / non_embedding < 0.02
    # by hand: per layer q, k, v, o projections, the 3 MLP matrices, 2 RMSNorms + q/k norms of head_dim
    h, L, qh, kvh, inter = models.QWEN3_SHAPES[name]
    per_layer = h * 128 * (2 * qh + 2 * kvh) + 3 * h * inter + 2 * h + 2 * 128
    assert n == emb + L * per_layer + h
    assert (cfg.head_dim, cfg.max_position_embeddings, cfg.rope_parameters["rope_theta"]) == (128, 40960, 1e6)


@need_bpe
def test_shape_spec_vocab_larger_than_tokenizer():
    model, tok = models.load_model("shape:tiny", dtype=torch.bfloat16)
    assert model.get_input_embeddings().weight.shape[0] == 151936 > len(tok) == 151669
    assert next(model.parameters()).dtype == torch.bfloat16

# -----------------------------------------------------------------------------
# The GPU report's dry run (CPU, tiny sizes)


def test_gpu_report_dry(tmp_path):
    out = tmp_path / "gpu_report.md"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_report.py"), "--dry", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = out.read_text()
    for row in ("token_logprobs", "sod_weights", "SFT step", "decode", "SOD step"):
        assert row in table, row
