"""Every reward, rollout and loss knob of train_sod.Config does what its comment says, one table row per knob: the
knob moves away from its default and the effect is checked against a value worked out by hand.

Rollout and reward knobs go through train_sod.sample_episodes (the trainer's rollout-and-grade step) with a scripted
engine and an executor that answers like the sandbox, on one math problem whose scripted episode is known token for
token: a turn with two tool calls, their tool response, an answer written `\\boxed{ 408 }` (right for the lenient
grader, wrong for the strict one). Loss knobs go through one train_sod.main step, whose advantages, step statistics
and PPO losses are recorded and recomputed here from the recorded log-probs with the knob's value; each row also
checks that the knob's default would have given another number, so a knob that is ignored fails.
"""
import dataclasses
import os
import re

import pytest
import torch

import models
import rollout
import sandbox
import sod_loss
import tools
import toy
import train_sod
from sandbox import ExecResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "%s"}}\n</tool_call>'
TURN_1 = "<think>\nCompute.\n</think>\n\n" + CALL % "print(12 * 34)" + "\n" + CALL % "wait(3); print(12345 * 6789)" \
    + "<|im_end|>"
TURN_2 = "<think>\nDone.\n</think>\n\nSo \\boxed{ 408 }.<|im_end|>"


class Scripted(rollout.Engine):
    """Turn 1 before any tool response, turn 2 after; records what each submission asked for."""

    def __init__(self, tok):
        self.tok, self.queue, self.asks = tok, [], []

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        self.asks.append(dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p))
        text = TURN_2 if "<tool_response>" in self.tok.decode(ids) else TURN_1
        new = self.tok.encode(text, add_special_tokens=False)[:max_new_tokens]
        self.queue.append((key, new, [0.0] * len(new), "stop"))

    def poll(self):
        out, self.queue = self.queue, []
        return out


def fake_sandbox(calls):
    """An executor with the sandbox's call shape: `wait(s); print(expr)` takes s seconds, so it times out under a
    timeout below s; each call's (code, timeout) is recorded."""
    def run(code, timeout=10.0, echo=True):
        calls.append((code, timeout))
        m = re.search(r"wait\((\d+)\)", code)
        if m and float(m.group(1)) > timeout:
            return ExecResult("timeout", "", "", timeout)
        return ExecResult("ok", str(eval(re.search(r"print\((.*)\)", code).group(1))) + "\n", "", 0.01)
    return run


@pytest.fixture(scope="module")
def tok():
    return models.make_toy_tokenizer()


def problem(tok, truth="408", extra=None):
    msgs = [{"role": "user", "content": "What is 12 * 34?"}]
    return {"prompt_ids": tok.apply_chat_template(msgs, tools=tools.TOOLS, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False),
            "source": "math_dapo", "ground_truth": truth, "extra_info": extra or {}}


# the baseline: the clean protocol, lenient grader, turn shaping; the episode's response (R tokens) ends 30 tokens
# into a 40-token overlong buffer (max_response_len = R + 10)
def baseline(tok):
    ep = episode(tok, train_sod.Config(protocol="clean", max_turns=4, max_response_len=10_000))
    return train_sod.Config(protocol="clean", max_turns=4, max_response_len=ep.response_len + 10, overlong_buffer=40)


def episode(tok, cfg, prob=None):
    calls = []
    ep = train_sod.sample_episodes(Scripted(tok), tok, [prob or problem(tok)], 1, cfg, 1.0, 1.0, fake_sandbox(calls))[0]
    ep.meta["calls"] = calls
    return ep


def into_buffer(ep, cfg):
    return (ep.response_len - (cfg.max_response_len - cfg.overlong_buffer)) / cfg.overlong_buffer


def check_overlong_penalty(tok, base, cfg, ep0, ep):
    assert ep0.acc and into_buffer(ep0, base) == pytest.approx(0.75)
    assert ep0.score == pytest.approx(1 - 1.0 * 0.75)  # default factor 1.0
    assert ep.score == pytest.approx(1 - 0.5 * 0.75)  # "DAPO overlong shaping": the factor scales the penalty


def check_overlong_buffer(tok, base, cfg, ep0, ep):
    assert ep.score == pytest.approx(1 - (ep.response_len - (base.max_response_len - 20)) / 20)  # 10 of 20: -0.5
    assert ep.score == pytest.approx(0.5) and ep0.score == pytest.approx(0.25)


def check_max_turns(tok, base, cfg, ep0, ep):
    assert (ep0.num_turns, ep0.num_tool_calls, ep0.finish) == (2, 2, "answer")
    assert (ep.num_turns, ep.num_tool_calls, ep.finish) == (1, 0, "max_turns")  # the last turn's calls never run


def check_max_response_len(tok, base, cfg, ep0, ep):
    assert not ep0.overlong and ep0.finish == "answer"
    assert ep.response_len == 50 and ep.overlong and ep.finish == "length"  # cut at 50 tokens, tool output included
    assert ep.ids == ep0.ids[:len(ep0.prompt_ids) + 50]


def check_max_obs_chars(tok, base, cfg, ep0, ep):
    assert ep0.turns[0]["observations"] == ["408", "83810205"]  # clean's default: 2,048 characters
    assert ep.turns[0]["observations"] == ["408", "8381\n... [truncated 4 characters]"]
    assert "<tool_response>\n8381\n... [truncated" in tok.decode(ep.ids)


def check_tool_timeout(tok, base, cfg, ep0, ep):
    assert [t for _, t in ep0.meta["calls"]] == [10.0, 10.0] and ep0.tool_timeouts == 0  # clean's default: 10 s
    assert [t for _, t in ep.meta["calls"]] == [2.0, 2.0] and ep.tool_timeouts == 1  # the 3-second call times out
    assert ep.turns[0]["status"] == ["ok", "timeout"]


def check_tool_max_calls(tok, base, cfg, ep0, ep):
    assert ep0.num_tool_calls == 2  # clean's default: every call of the turn
    assert ep.num_tool_calls == 1 and ep.turns[0]["observations"] == ["408"] and len(ep.meta["calls"]) == 1


def check_grader(tok, base, cfg, ep0, ep):
    assert ep0.acc and ep0.pred == " 408 "  # clean's default: normalized, the spaces do not matter
    assert not ep.acc  # strict: exact string equality with the ground truth
    assert ep.score == pytest.approx(-0.9 - 0.75)  # wrong: -1 + turn shaping (2 turns) - the overlong penalty


def check_shaping(tok, base, cfg, ep0, ep):
    # a wrong answer (truth 409): clean's default "turns" counts 2 x 2 turns: -1 + (4 - 2) / 2 * 0.1 = -0.9
    assert not ep0.acc and ep0.score == pytest.approx(-0.9 - 0.75)
    assert ep.score == pytest.approx(-1.0 - 0.75)  # none


def check_shaping_row(tok, base, cfg, ep0, ep):
    assert ep.score == pytest.approx(-1 + (6 - 2) / 2 * 0.1 - 0.75)  # row: the problem's extra_info num_turns = 6


def check_protocol(tok, base, cfg, ep0, ep):
    # paper: one call per turn, the strict grader, the original's tool-response ids (no newline after <|im_end|>)
    assert ep.num_tool_calls == 1 and not ep.acc
    end = tok.convert_tokens_to_ids("<|im_end|>")
    after = ep.ids[ep.ids.index(end, len(ep.prompt_ids)) + 1]
    assert tok.decode([after]) != "\n" and tok.decode(ep0.ids[ep0.ids.index(end, len(ep0.prompt_ids)) + 1]) == "\n"


ROLLOUT_KNOBS = [  # (knob, value, problem overrides, check)
    ("overlong_penalty", 0.5, {}, check_overlong_penalty),
    ("overlong_buffer", 20, {}, check_overlong_buffer),
    ("max_turns", 1, {}, check_max_turns),
    ("max_response_len", 50, {}, check_max_response_len),
    ("max_obs_chars", 4, {}, check_max_obs_chars),
    ("tool_timeout", 2.0, {}, check_tool_timeout),
    ("tool_max_calls", 1, {}, check_tool_max_calls),
    ("grader", "strict", {}, check_grader),
    ("shaping", "none", {"truth": "409"}, check_shaping),
    ("shaping", "row", {"truth": "409", "extra": {"num_turns": 6}}, check_shaping_row),
    ("protocol", "paper", {}, check_protocol),
]


@pytest.mark.parametrize("knob, value, prob, check", ROLLOUT_KNOBS, ids=[f"{r[0]}={r[1]}" for r in ROLLOUT_KNOBS])
def test_rollout_and_reward_knob(tok, knob, value, prob, check):
    base = baseline(tok)
    cfg = dataclasses.replace(base, **{knob: value})
    assert getattr(base, knob) != value
    p = problem(tok, **prob)
    check(tok, base, cfg, episode(tok, base, p), episode(tok, cfg, p))


def test_tool_memory_mb_limits_each_call():
    # the trainer builds its executor with tools.protocol_of(cfg).memory_mb (the main run below checks that call);
    # the sandbox then holds each call to it: 300 MB fit the default 2,048, not 128
    code = "x = bytearray(300 * 2**20); print(len(x) > 0)"
    for mb, status in ((None, "ok"), (128, "memory")):
        cfg = train_sod.Config(protocol="clean", **({"tool_memory_mb": mb} if mb else {}))
        assert tools.protocol_of(cfg).memory_mb == (mb or 2048)
        assert sandbox.make_executor(None, tools.protocol_of(cfg).memory_mb)(code, 30.0).status == status

# -----------------------------------------------------------------------------
# Loss knobs: one step of train_sod.main, everything the loss saw recorded


def hand_weights(s, t, m, eps, delta):
    """w per token: w_k = min((d_1 + eps) / (d_k + eps), 1 + delta), steps = maximal runs of m == 1."""
    w = torch.zeros_like(s, dtype=torch.float64)
    for b in range(m.shape[0]):
        runs, start = [], None
        for i, v in enumerate(m[b].tolist() + [0]):
            if v and start is None:
                start = i
            elif not v and start is not None:
                runs.append((start, i))
                start = None
        d = [float((s[b, x:y] - t[b, x:y]).abs().double().mean()) for x, y in runs]
        for (x, y), dk in zip(runs, d):
            w[b, x:y] = min((d[0] + eps) / (dk + eps), 1 + delta)
    return w


def hand_advantage(rec, coef, eps, delta):
    r = rec["rewards"].double().view(-1, rec["group_size"])
    a = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).view(-1, 1)
    s, t, m = rec["s"], rec["t"], rec["mask"]
    return torch.where(m != 0, a + coef * hand_weights(s, t, m, eps, delta) * (t - s).double(), 0.0)


def hand_ppo(rec, low, high, c):
    m = rec["mask"] != 0
    ratio = torch.where(m, (rec["logp"].double() - rec["old"].double()).exp(), 1.0)
    adv = rec["adv"].double()
    term = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - low, 1 + high))
    return torch.where(m, torch.where(adv < 0, torch.minimum(term, -adv * c), term), 0.0).sum().item()


LOSS = dict(opd_coef=0.5, sod_eps=0.05, sod_delta=0.05, clip_low=0.01, clip_high=0.02, clip_ratio_c=1.05,
            tool_memory_mb=256)
DEFAULT = {k: getattr(train_sod.Config, k) for k in LOSS}


@pytest.fixture(scope="module")
def loss_run(tmp_path_factory):
    """One step (8 episodes of 2 prompts, mixed rewards; 2 PPO updates at lr 2e-2, so that the second update's
    ratios leave [0.99, 1.05]) with every loss knob off its default; what sod_advantages, step_stats, ppo_loss and
    make_executor received and returned."""
    from test_alignment import ANSWER, hand_rollout  # hand-built episodes: two turns around a tool response
    mp, rec = pytest.MonkeyPatch(), {"adv": [], "stats": [], "ppo": [], "executor": [], "grad_error": [],
                                     "model": None, "expected": None}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        mp.delenv(k, raising=False)
    small = toy.toy_problems
    # the trainer's 2,048 toy prompts: 8 load faster (other callers, the toy tokenizer's corpus among them,
    # get theirs)
    mp.setattr(toy, "toy_problems", lambda n, seed: small(8 if n == 2048 else n, seed))
    # half the episodes answer after a long, repetitive thought, which these two models agree on far more than on
    # the tool call (d_2 ~ d_1 / 2: w_2 is capped at 1 + δ); the other half drift more in turn 2 (w_2 < 1)
    mp.setattr(rollout, "rollout", hand_rollout([], (ANSWER, ANSWER.replace("Done.", "the " * 30))))
    real = {f: getattr(sod_loss, f) for f in ("sod_advantages", "step_stats", "ppo_loss")}

    def adv(rewards, group_size, s, t, mask, **kw):
        out = real["sod_advantages"](rewards, group_size, s, t, mask, **kw)
        rec["adv"].append(dict(rewards=rewards, group_size=group_size, s=s, t=t, mask=mask, out=out))
        return out

    def stats(s, t, mask, **kw):
        out = real["step_stats"](s, t, mask, **kw)
        rec["stats"].append(dict(s=s, t=t, mask=mask, out=out))
        return out

    def logprobs(model, *a):  # the module the update differentiates
        if torch.is_grad_enabled():
            rec["model"] = model
        return real_logprobs(model, *a)

    def ppo(logp, old, a, mask, *args, **kw):
        out = real["ppo_loss"](logp, old, a, mask, *args, **kw)
        rec["ppo"].append(dict(logp=logp.detach(), old=old, adv=a, mask=mask, loss=out[0].item()))
        # this micro-batch's share of the update, by hand: d(loss sum / the mini-batch's token count) / d params (one
        # micro-batch per mini-batch here, so the count is this mask's)
        params = list(rec["model"].parameters())
        g = torch.autograd.grad(out[0] / mask.sum(), params, retain_graph=True, allow_unused=True)
        rec["expected"] = [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]
        return out

    def clip(params, *a, **kw):  # called on the update's gradient, right before the optimizer step
        params = list(params)
        rec["grad_error"].append(max((p.grad - e).abs().max().item() for p, e in zip(params, rec["expected"])))
        return real_clip(params, *a, **kw)
    real_logprobs, real_clip = train_sod.sequence_logprobs, torch.nn.utils.clip_grad_norm_
    mp.setattr(train_sod, "sequence_logprobs", logprobs)
    mp.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    mp.setattr(sod_loss, "sod_advantages", adv)
    mp.setattr(sod_loss, "step_stats", stats)
    mp.setattr(sod_loss, "ppo_loss", ppo)
    real_exec = sandbox.make_executor
    mp.setattr(sandbox, "make_executor", lambda url=None, memory_mb=2048: rec["executor"].append(memory_mb)
               or real_exec(url, memory_mb))
    try:
        train_sod.main(["--config", os.path.join(ROOT, "configs", "toy.py"), "--student", "toy:tiny", "--teacher",
                        "toy:toy_student", "--out_dir", str(tmp_path_factory.mktemp("loss")), "--prompts_per_step",
                        "2", "--mini_batch_prompts", "1", "--max_steps", "1", "--lr", "2e-2", "--dump_every", "0",
                        "--val_bench", "", *[f"--{k}={v}" for k, v in LOSS.items()]])
    finally:
        mp.undo()
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(k, None)
    return rec


def differs(a, b, tol=1e-4):
    return (a - b).abs().max().item() > tol


def check_opd_coef(rec):
    a = rec["adv"][0]
    assert torch.allclose(a["out"].double(), hand_advantage(a, 0.5, 0.05, 0.05), atol=1e-5)
    assert differs(a["out"].double(), hand_advantage(a, DEFAULT["opd_coef"], 0.05, 0.05))  # c scales the OPD term


def check_sod_eps(rec):
    a = rec["adv"][0]
    assert torch.allclose(a["out"].double(), hand_advantage(a, 0.5, 0.05, 0.05), atol=1e-5)
    assert differs(a["out"].double(), hand_advantage(a, 0.5, DEFAULT["sod_eps"], 0.05))  # ε in the step weight
    st = rec["stats"][0]
    w = hand_weights(st["s"], st["t"], st["mask"], 0.05, 0.05)
    assert st["out"]["w"].double().tolist() == pytest.approx(  # the logged weights: the first token of each step
        [w[b, i].item() for b in range(w.shape[0]) for i in range(w.shape[1])
         if st["mask"][b, i] and (i == 0 or not st["mask"][b, i - 1])], abs=1e-5)


def check_sod_delta(rec):
    a = rec["adv"][0]
    assert differs(a["out"].double(), hand_advantage(a, 0.5, 0.05, DEFAULT["sod_delta"]))  # the cap 1 + δ binds
    assert rec["stats"][0]["out"]["w"].max().item() == pytest.approx(1.05)  # capped at 1 + δ, logged so


def check_clip(rec):
    second = rec["ppo"][-1]  # the second update: the policy moved, ratios off 1
    assert len(rec["ppo"]) == 2
    assert second["loss"] == pytest.approx(hand_ppo(second, 0.01, 0.02, 1.05), rel=1e-5, abs=1e-6)
    for knob, args in (("clip_low", (DEFAULT["clip_low"], 0.02, 1.05)),  # each binds on some token
                       ("clip_high", (0.01, DEFAULT["clip_high"], 1.05)),
                       ("clip_ratio_c", (0.01, 0.02, DEFAULT["clip_ratio_c"]))):
        assert hand_ppo(second, *args) != pytest.approx(second["loss"], rel=1e-4), knob


def check_update_gradient(rec):
    # each update's gradient is its own mini-batch's token-mean PPO loss, nothing carried over from the previous one
    assert len(rec["grad_error"]) == 2 and max(rec["grad_error"]) < 1e-6, rec["grad_error"]


def check_tool_memory_mb(rec):
    assert rec["executor"] == [256]  # the trainer's executor holds each call to tool_memory_mb (default 2,048)


LOSS_KNOBS = [("opd_coef", check_opd_coef), ("sod_eps", check_sod_eps), ("sod_delta", check_sod_delta),
              ("clip_low/clip_high/clip_ratio_c", check_clip), ("tool_memory_mb", check_tool_memory_mb),
              ("the update's gradient", check_update_gradient)]


@pytest.mark.parametrize("knob, check", LOSS_KNOBS, ids=[r[0] for r in LOSS_KNOBS])
def test_loss_knob(loss_run, knob, check):
    check(loss_run)
