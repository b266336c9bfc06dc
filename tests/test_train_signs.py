"""train_sod.main, one step per algo, on a scripted policy whose group mixes right and wrong answers: the update
must raise the log-probs of the rewarded responses relative to the others' (the sign of the PPO step), and the
in-training validation must report the accuracy the script implies.

The policy is scripted by replacing rollout.rollout (the agreed entry point) with a function that builds each
episode from token ids: a tool call, a tool response (context, mask 0), then an answer that is right for the even
episodes of a call and off by one for the odd ones. Every run uses student = teacher = `toy:tiny` (the same seeded
weights), so the teacher's log-probs equal the student's, the distillation term τ − s is exactly 0 and every algo's
advantage is the GRPO one: +a on the right episodes, −a on the wrong ones, a > 0. The gradient of the first PPO
update (ratio 1) is then −a/N · ∇(Σ_right log p − Σ_wrong log p); the tokens the right and wrong episodes share in
the same context cancel, so to first order any descent step raises Σ_right log p − Σ_wrong log p: every right episode
gains more than any wrong one. Whether the right ones rise (or the wrong ones fall) in absolute terms is not
implied: the step moves the shared tokens too, in a direction set by the differing ones, so it depends on the
problem drawn and on the tokenizer's merges (a one-step Adam update on one toy problem lowered both).
"""
import json
import os
import re

import pytest
import torch

import models
import rollout
import train_sod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALL = ('<think>\nI multiply with the tool.\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
        '{"code": "print(%d * %d)"}}\n</tool_call><|im_end|>')
TOOL = "\n<|im_start|>user\n<tool_response>\n%d\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
ANSWER = "<think>\nThe tool printed it.\n</think>\n\nThe answer is \\boxed{%d}.<|im_end|>"


def scripted_rollout(calls, mixed=True):
    """A stand-in for rollout.rollout: episode j of each call answers right if j is even, else the truth + 1 (with
    mixed=False: always right). The ground truth is read off the rendered prompt ("What is a * b" [+ c]); each call's
    episodes go to `calls`."""
    def fake(engine, tok, prompt_ids_list, **kw):
        eps = []
        for j, p in enumerate(prompt_ids_list):
            a, b, c = re.search(r"(\d+) \* (\d+)(?: \+ (\d+))?", tok.decode(p)).groups()
            a, b, truth = int(a), int(b), int(a) * int(b) + int(c or 0)
            enc = lambda s: tok.encode(s, add_special_tokens=False)
            t1, obs, t2 = enc(CALL % (a, b)), enc(TOOL % (a * b)), enc(ANSWER % (truth + (j % 2 if mixed else 0)))
            resp = t1 + obs + t2
            eps.append(rollout.Episode(
                prompt_ids=list(p), ids=list(p) + resp, mask=[0] * len(p) + [1] * len(t1) + [0] * len(obs) +
                [1] * len(t2), sampler_logp=[0.0] * (len(p) + len(resp)), num_turns=2, num_tool_calls=1,
                finish="answer", response_text=tok.decode(resp),
                turns=[{"text": tok.decode(t1), "calls": [], "observations": [str(a * b)], "status": ["ok"]},
                       {"text": tok.decode(t2), "calls": [], "observations": [], "status": []}]))
        calls.append(eps)
        return eps
    return fake


@pytest.fixture
def fresh_env():
    """train_sod.main initialises (and destroys) a one-process group in this process; it must pick its own port
    and leave the environment as it found it."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.pop(k) for k in keys if k in os.environ}
    yield
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update(saved)


def run_main(tmp_path, monkeypatch, *extra, mixed=True, teacher="toy:tiny"):
    calls = []
    monkeypatch.setattr(rollout, "rollout", scripted_rollout(calls, mixed))
    train_sod.main(["--config", os.path.join(ROOT, "configs", "toy.py"), "--student", "toy:tiny", "--teacher", teacher,
                    "--out_dir", str(tmp_path), "--data", "toy", "--prompts_per_step", "1", "--mini_batch_prompts", "1",
                    "--max_steps", "1", "--lr", "1e-3", "--dump_every", "0", "--backend", "hf", *extra])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    return calls, rows


def token_logp(model, ep):
    """log p(token) of ids[1:] from full logits (the reference, not token_logprobs), float64."""
    ids = torch.tensor([ep.ids])
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0]


def seq_logp(model, ep):
    """Σ of log p(token) over the episode's sampled tokens."""
    return float((token_logp(model, ep) * torch.tensor(ep.mask[1:], dtype=torch.float64)).sum())


def step_weights_by_hand(s, t, mask, eps=1e-6, delta=0.2):
    """w per token (docs/algorithm.md), one step (a maximal run of mask == 1) at a time:
    w_k = min((d_1+ε)/(d_k+ε), 1+δ)."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    w = torch.zeros_like(s)
    d = [float((s[a:b] - t[a:b]).abs().mean()) for a, b in runs]
    for (a, b), dk in zip(runs, d):
        w[a:b] = min((d[0] + eps) / (dk + eps), 1 + delta)
    return w


@pytest.mark.parametrize("algo", ["grpo", "opd", "sod", "gated"])
def test_one_update_raises_rewarded_above_unrewarded(algo, tmp_path, monkeypatch, fresh_env):
    calls, rows = run_main(tmp_path, monkeypatch, "--algo", algo, "--val_bench", "")
    eps = calls[-1]
    G = len(eps)  # the whole group of the single prompt (configs/toy.py's group size)
    assert G >= 2 and [e.acc for e in eps] == [j % 2 == 0 for j in range(G)]  # the grader sees what we scripted
    assert rows[0]["acc"] == pytest.approx(sum(j % 2 == 0 for j in range(G)) / G)
    if algo != "grpo":
        assert rows[0]["d_mean"] < 1e-6  # teacher = student: no distillation signal, only the reward's
    before, _ = models.load_model("toy:tiny")
    after, _ = models.load_model(str(tmp_path))  # the run directory: its latest (step 1) checkpoint
    delta = [seq_logp(after, e) - seq_logp(before, e) for e in eps]
    right = [d for d, e in zip(delta, eps) if e.acc]
    wrong = [d for d, e in zip(delta, eps) if not e.acc]
    assert min(right) - max(wrong) > 1e-3, delta  # a real move, not rounding


def test_validation_inside_training_reports_the_scripted_accuracy(tmp_path, monkeypatch, fresh_env):
    calls, rows = run_main(tmp_path, monkeypatch, "--algo", "opd", "--val_bench", "toy", "--val_limit", "3",
                           "--val_k", "2", "--eval_every", "1")
    val = calls[0]  # validation runs before the step's rollouts
    assert len(val) == 6 and len(calls) == 2
    assert rows[0]["val/acc"] == pytest.approx(sum(bool(e.acc) for e in val) / 6) == pytest.approx(3 / 6)


@pytest.mark.parametrize("algo", ["opd", "sod", "gated"])
def test_distillation_term_moves_the_student_along_the_teacher_signal(algo, tmp_path, monkeypatch, fresh_env):
    # every episode right: the group's rewards are equal, A_i = 0, and the advantage is the distillation term alone,
    # A_t = c · g_t · (τ_t − s_t) with g = 1 (opd), the step weight w_k (sod), β = β_min + (β_max − β_min) · σ(0) =
    # 1/2 (gated, defaults 0 and 1); c = 1. A descent step on the PPO loss (ratio 1) raises Σ_t A_t log p_t to first
    # order, so Σ_t A_t Δs_t > 0 with A_t computed here by hand; a small lr keeps second-order terms out
    calls, rows = run_main(tmp_path, monkeypatch, "--algo", algo, "--val_bench", "", "--lr", "1e-5", mixed=False,
                           teacher="toy:toy_student")
    eps = calls[-1]
    assert all(e.acc for e in eps) and rows[0]["d_mean"] > 0.0
    before, _ = models.load_model("toy:tiny")
    teacher, _ = models.load_model("toy:toy_student")
    after, _ = models.load_model(str(tmp_path))
    gain = 0.0
    for e in eps:
        s, t, m = token_logp(before, e), token_logp(teacher, e), torch.tensor(e.mask[1:], dtype=torch.float64)
        g = {"opd": m, "sod": step_weights_by_hand(s, t, e.mask[1:]), "gated": 0.5 * m}[algo]
        gain += float((g * (t - s) * m * (token_logp(after, e) - s)).sum())
    assert gain > 0, gain
