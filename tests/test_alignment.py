"""Target alignment: the tokens that carry a loss term are exactly the sampled assistant tokens, read as TARGETS.

A sequence of T ids gives T-1 predictions: position t of the log-probs, the advantage and the loss predicts ids[t+1].
So a token of the episode at index i (i >= 1) is trained through position i-1, and only if i is an assistant token
(the policy sampled it); the prompt and every tool-response token are context. A mask aligned with the inputs instead
of the targets (mask[:-1] in place of mask[1:]) would train the first token of every tool response and the prompt's
last token, and miss every turn's closing <|im_end|>; this file runs the trainers on hand-built episodes and
conversations whose assistant spans are known by construction and checks, position by position:
- train_sod.py: which log-probs receive a gradient in the PPO update, where the advantage is non-zero, and which
  tokens the step statistics (d_k, n_tokens) are computed over (d_k against full-logit log-probs computed here);
- train_sft.py: which log-probs receive a gradient from the SFT loss.
"""
import json
import os
import re

import pytest
import torch

import models
import rollout
import sod_loss
import tools
import toy
import train_sft
import train_sod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALL = ('<think>\nMultiply.\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
        '{"code": "print(%d * %d)"}}\n</tool_call><|im_end|>')
ANSWER = "<think>\nDone.\n</think>\n\nSo \\boxed{%d}.<|im_end|>"


@pytest.fixture
def fresh_env(monkeypatch):
    """main() sets up a one-process group in this process with its own port; the environment is restored after."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    yield
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)


def grad_spy(monkeypatch, seen):
    """sod_loss.token_logprobs as the trainers call it, recording (targets, d loss / d log-prob) of every forward
    that takes part in a backward."""
    real = sod_loss.token_logprobs

    def spy(hidden, weight, targets, *a, **k):
        out = real(hidden, weight, targets, *a, **k)
        if out.requires_grad:
            y = targets.detach().clone()
            out.register_hook(lambda g: seen.append((y, g.detach().clone())))
        return out
    monkeypatch.setattr(sod_loss, "token_logprobs", spy)


def trained_positions(seen, ids):
    """The target positions t (predicting ids[t+1]) of the sequence `ids` whose log-prob received a gradient, over
    every recorded backward. A row is this sequence when its targets are ids[1:] followed by padding only."""
    got, n = set(), len(ids) - 1
    for y, g in seen:
        for row in range(y.shape[0]):
            if y[row, :n].tolist() == ids[1:] and not y[row, n:].any():
                got |= {t for t in range(n) if g[row, t] != 0}
                assert not g[row, n:].any(), "padding received a gradient"
    return got

# -----------------------------------------------------------------------------
# train_sod.py: hand-built episodes prompt | turn 1 (a tool call) | tool response | turn 2 (the answer)


def hand_rollout(log, answers=(ANSWER,)):
    """A stand-in for rollout.rollout: each episode is built from ids whose roles are known by construction; the
    answer is right for even episodes of the call and off by one for odd ones (mixed rewards, so A_i != 0), written
    as answers[j // 2 % len(answers)] for episode j. Every episode is distinct (its first thought names it), and the
    episodes of the second group of four think longer (two groups, two lengths)."""
    def fake(engine, tok, prompt_ids_list, **kw):
        eps = []
        for j, p in enumerate(prompt_ids_list):
            a, b, c = re.search(r"(\d+) \* (\d+)(?: \+ (\d+))?", tok.decode(p)).groups()
            a, b, truth = int(a), int(b), int(a) * int(b) + int(c or 0)
            t1 = tok.encode(CALL.replace("Multiply.", f"Multiply ({j})." + " Check." * (j // 4 % 2)) % (a, b),
                            add_special_tokens=False)
            obs = tools.tool_response_ids(tok, [str(a * b)], tools.tool_protocol("clean"))
            t2 = tok.encode(answers[j // 2 % len(answers)] % (truth + j % 2), add_special_tokens=False)
            ep = rollout.Episode(prompt_ids=list(p), ids=list(p) + t1 + obs + t2,
                                 mask=[0] * len(p) + [1] * len(t1) + [0] * len(obs) + [1] * len(t2),
                                 sampler_logp=[0.0] * (len(p) + len(t1) + len(obs) + len(t2)), num_turns=2,
                                 num_tool_calls=1, finish="answer", response_text=tok.decode(t1 + obs + t2))
            ep.meta["spans"] = [(len(p), len(p) + len(t1)), (len(p) + len(t1) + len(obs), len(ep.ids))]
            eps.append(ep)
        log.append(eps)
        return eps
    return fake


def full_logprobs(model, ids):
    """log p(ids[t+1] | ids[:t+1]) from the full logits, float64: the reference, not token_logprobs."""
    x = torch.tensor([ids])
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=x).logits[0, :-1].double(), -1).gather(-1, x[0, 1:, None])[:, 0]


def test_sod_trainer_trains_exactly_the_sampled_tokens(tmp_path, monkeypatch, fresh_env):
    log, seen, advs, stats = [], [], [], []
    monkeypatch.setattr(rollout, "rollout", hand_rollout(log))
    small = toy.toy_problems
    # the trainer's 2,048 toy prompts: 8 load faster (other callers, the toy tokenizer's corpus among them,
    # get theirs)
    monkeypatch.setattr(toy, "toy_problems", lambda n, seed: small(8 if n == 2048 else n, seed))
    grad_spy(monkeypatch, seen)
    real_adv, real_stats = sod_loss.sod_advantages, sod_loss.step_stats
    monkeypatch.setattr(sod_loss, "sod_advantages", lambda *a, **k: advs.append(real_adv(*a, **k)) or advs[-1])
    monkeypatch.setattr(sod_loss, "step_stats", lambda *a, **k: stats.append(real_stats(*a, **k)) or stats[-1])
    train_sod.main(["--config", os.path.join(ROOT, "configs", "toy.py"), "--student", "toy:tiny", "--teacher",
                    "toy:toy_student", "--out_dir", str(tmp_path), "--prompts_per_step", "1", "--mini_batch_prompts",
                    "1", "--max_steps", "1", "--lr", "1e-3", "--dump_every", "0", "--val_bench", ""])
    eps = log[-1]
    assert len(eps) == 4 and [bool(e.acc) for e in eps] == [True, False, True, False]  # mixed: A_i != 0
    student, _ = models.load_model("toy:tiny")  # the weights the old log-probs were computed with
    teacher, _ = models.load_model("toy:toy_student")
    for i, e in enumerate(eps):
        # by construction: target position t predicts ids[t+1], so turn (a, b) is trained at positions a-1 .. b-2
        want = {t for a, b in e.meta["spans"] for t in range(a - 1, b - 1)}
        assert trained_positions(seen, e.ids) == want, i  # the policy loss reaches these log-probs, no other
        adv = advs[0][i]
        assert {t for t in range(len(e.ids) - 1) if adv[t] != 0} == want, i  # the advantage lives there too
        assert not adv[len(e.ids) - 1:].any()
        # the step statistics: one step per assistant turn, over that turn's tokens
        s, tau = full_logprobs(student, e.ids), full_logprobs(teacher, e.ids)
        rows = stats[0]["row"] == i
        assert stats[0]["turn"][rows].tolist() == [0, 1]
        assert stats[0]["n_tokens"][rows].tolist() == [b - a for a, b in e.meta["spans"]]
        d = [float((s[a - 1:b - 1] - tau[a - 1:b - 1]).abs().mean()) for a, b in e.meta["spans"]]
        assert stats[0]["d"][rows].tolist() == pytest.approx(d, abs=1e-5), i

# -----------------------------------------------------------------------------
# train_sft.py: a hand-built conversation, its assistant turns spelled out


def conversation(q, a, b, c):
    call = {"type": "function", "function": {"name": "code_interpreter", "arguments": {"code": f"print({a} * {b})"}}}
    return [{"role": "user", "content": q},
            {"role": "assistant", "content": "", "reasoning_content": "Multiply.", "tool_calls": [call]},
            {"role": "tool", "content": str(a * b)},
            {"role": "assistant", "content": f"So \\boxed{{{a * b + c}}}.", "reasoning_content": "Add."}]


def assistant_ids(tok, m):
    """One assistant turn's ids as Qwen3 writes it (thinking on), spelled out here from the message; it starts with
    the special token <think>, so it tokenises the same alone and in context."""
    args = json.dumps(m["tool_calls"][0]["function"]["arguments"]) if m.get("tool_calls") else None
    text = f"<think>\n{m['reasoning_content']}\n</think>\n\n{m['content']}"
    if args:
        text += f'<tool_call>\n{{"name": "code_interpreter", "arguments": {args}}}\n</tool_call>'
    return tok.encode(text + "<|im_end|>", add_special_tokens=False)


def find(seq, sub):
    hits = [i for i in range(len(seq) - len(sub) + 1) if seq[i:i + len(sub)] == sub]
    assert len(hits) == 1, hits
    return hits[0]


def test_sft_trainer_trains_exactly_the_assistant_tokens(tmp_path, monkeypatch, fresh_env):
    tok = models.make_toy_tokenizer()
    convs = [conversation("What is 1234 * 567 + 89?", 1234, 567, 89),
             conversation("What is 4321 * 765 + 98? Use the tool.", 4321, 765, 98)]
    with open(tmp_path / "sft.jsonl", "w") as f:
        f.writelines(json.dumps({"messages": c, "tools": tools.TOOLS}) + "\n" for c in convs)
    seen = []
    grad_spy(monkeypatch, seen)
    train_sft.main(["--out_dir", str(tmp_path / "run"), "--model", "toy:tiny", "--data", str(tmp_path / "sft.jsonl"),
                    "--batch_size", "2", "--micro_batch_tokens", "2048", "--max_length", "1024", "--max_steps", "1",
                    "--lr", "1e-3"])
    y, g = seen[0]  # one micro-batch: both conversations packed in one row, as the trainer packs by default
    assert len(seen) == 1 and y.shape[0] == 1
    want = set()
    for msgs in convs:
        ids = tok.apply_chat_template(msgs, tools=tools.TOOLS, tokenize=True, return_dict=False)
        start = find(y[0].tolist(), ids[1:])  # where the row's targets of this conversation begin
        for m in msgs:
            if m["role"] == "assistant":
                turn = assistant_ids(tok, m)
                a = find(ids, turn)  # the turn's tokens are ids[a .. a+len-1], predicted at positions a-1 ..
                want |= {start + t for t in range(a - 1, a - 1 + len(turn))}
    assert {t for t in range(y.shape[1]) if g[0, t] != 0} == want
