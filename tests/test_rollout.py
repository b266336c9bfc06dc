"""rollout.py: tool-call parsing, the token-in/token-out agent loop (scripted engine), HFEngine end to end."""
import pytest
import torch

import data
import rollout
from sandbox import ExecResult


@pytest.fixture(scope="module")
def tok():
    return data.make_toy_tokenizer()


CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "%s"}}\n</tool_call>'


@pytest.mark.parametrize("text, want", [
    ("no call here", []),
    (CALL % "print(1)", [{"name": "code_interpreter", "arguments": {"code": "print(1)"}}]),
    (CALL % "a=1" + " and " + CALL % "b=2", [{"name": "code_interpreter", "arguments": {"code": "a=1"}},
                                            {"name": "code_interpreter", "arguments": {"code": "b=2"}}]),
    ('<tool_call>{"name": "code_interpreter", "arguments": "{\\"code\\": \\"x\\"}"}</tool_call>',
     [{"name": "code_interpreter", "arguments": {"code": "x"}}]),  # arguments as a JSON string
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>', "unknown tool 'python'"),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"src": "1"}}</tool_call>', 'string argument "code"'),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": 5}}</tool_call>', 'string argument "code"'),
    ('<tool_call>{"name": "code_interpreter", "arguments": [1]}</tool_call>', "must be a JSON object"),
    ('<tool_call>["code_interpreter"]</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": "1"}}', "unclosed"),
])
def test_parse_tool_calls(text, want):
    got = rollout.parse_tool_calls(text)
    if isinstance(want, str):
        assert len(got) == 1 and want in got[0]["error"]
    else:
        assert got == want


def test_tool_response_ids_prefix_property(tok):
    chat = [{"role": "user", "content": "hi"}]
    turn = {"role": "assistant", "content": "", "reasoning_content": "think",
            "tool_calls": [{"type": "function", "function": {"name": "code_interpreter", "arguments": {"code": "1"}}}]}
    results = ["4", "Error: x"]
    before = tok.apply_chat_template(chat + [turn], tools=data.TOOLS, tokenize=True, return_dict=False)
    after = tok.apply_chat_template(chat + [turn] + [{"role": "tool", "content": r} for r in results],
                                    tools=data.TOOLS, add_generation_prompt=True, tokenize=True, return_dict=False)
    obs = rollout.tool_response_ids(tok, results)
    end = len(before) - 1  # before ends with "<|im_end|>\n"; appended ids continue right after <|im_end|>
    assert after == before[:end] + obs
    assert tok.decode(obs).endswith("<|im_start|>assistant\n") and "<tool_response>\nError: x" in tok.decode(obs)


class Scripted:
    """Emits the given assistant turns in order for every episode (a turn per engine call)."""

    def __init__(self, tok, turns):
        self.turns = [tok.encode(t, add_special_tokens=False) for t in turns]
        self.calls = 0

    def generate(self, prompts, max_new_tokens, temperature, top_p):
        t = self.turns[min(self.calls, len(self.turns) - 1)]
        self.calls += 1
        return [(t[:max_new_tokens], [-0.25] * len(t[:max_new_tokens]), "stop") for _ in prompts]


def fake_exec(code, timeout):
    if "boom" in code:
        return ExecResult("error", "", "ZeroDivisionError: division by zero", 0.01)
    if "sleep" in code:
        return ExecResult("timeout", "partial", "", timeout)
    return ExecResult("ok", str(eval(code.removeprefix("print(")[:-1])) + "\n", "", 0.01)


def prompt(tok):
    return tok.apply_chat_template([{"role": "user", "content": "What is 6 * 7?"}], tools=data.TOOLS,
                                   add_generation_prompt=True, tokenize=True, return_dict=False)


def test_agent_loop_masks_steps_and_observations(tok):
    turns = [(CALL % "print(6 * 7)") + "<|im_end|>", (CALL % "boom") + "<|im_end|>",
             "The answer is \\boxed{42}.<|im_end|>"]
    p = prompt(tok)
    ep = rollout.rollout(Scripted(tok, turns), tok, [p, p], max_turns=5, max_response_len=500,
                         execute=fake_exec)[0]
    assert ep.finish == "answer" and ep.num_turns == 3 and ep.num_tool_calls == 2 and ep.tool_errors == 1
    assert ep.ids[:len(p)] == p and sum(ep.mask[:len(p)]) == 0
    sampled = [tok.encode(t, add_special_tokens=False) for t in turns]
    # the masked runs are exactly the sampled turns, in order, with their log-probs; the rest is context
    runs, cur = [], []
    for i, m in zip(ep.ids, ep.mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    runs += [cur] if cur else []
    assert runs == sampled
    assert [lp for lp, m in zip(ep.sampler_logp, ep.mask) if m] == [-0.25] * sum(map(len, sampled))
    assert all(lp == 0.0 for lp, m in zip(ep.sampler_logp, ep.mask) if not m)
    steps = ep.step_ids
    assert sorted(set(steps)) == [-1, 0, 1, 2] and all((s >= 0) == bool(m) for s, m in zip(steps, ep.mask))
    context = tok.decode([i for i, m in zip(ep.ids, ep.mask) if not m])
    assert "<tool_response>\n42\n</tool_response>" in context and "ZeroDivisionError" in context
    assert ep.response_text.endswith("\\boxed{42}.<|im_end|>")
    assert rollout.retokenize_drift([ep], tok) in (0.0, 1.0)


def test_limits_turns_length_and_observation_size(tok):
    call = (CALL % "print(10 ** 300)") + "<|im_end|>"
    p = prompt(tok)
    ep = rollout.rollout(Scripted(tok, [call]), tok, [p], max_turns=3, max_response_len=10_000,
                         max_obs_chars=50, execute=fake_exec)[0]
    assert ep.finish == "max_turns" and ep.num_turns == 3 and not ep.overlong
    obs = ep.turns[0]["observations"][0]
    assert obs.startswith("1" + "0" * 49) and "[truncated 251 characters]" in obs
    ep = rollout.rollout(Scripted(tok, [call]), tok, [p], max_turns=10, max_response_len=60, execute=fake_exec)[0]
    assert ep.overlong and ep.finish == "length" and ep.response_len <= 60
    ep = rollout.rollout(Scripted(tok, [(CALL % "sleep") + "<|im_end|>", "done<|im_end|>"]), tok, [p], max_turns=4,
                         max_response_len=500, execute=fake_exec)[0]
    assert ep.tool_timeouts == 1 and "TimeoutError" in ep.turns[0]["observations"][0]


def test_hf_engine_logprobs_batching_and_real_sandbox(tok):
    model = data.tiny_qwen3(tok, "tiny", seed=3)
    eng = rollout.HFEngine(model, tok)
    prompts = [prompt(tok), prompt(tok)[:-7], [1, 2, 3]]
    torch.manual_seed(0)
    outs = eng.generate(prompts, 12, temperature=1.0, top_p=0.9)
    for p, (new, lps, finish) in zip(prompts, outs):
        assert 1 <= len(new) <= 12 and finish in ("stop", "length")
        with torch.no_grad():  # the engine's log-probs are the raw-logit log-probs of a plain forward pass
            logits = model(torch.tensor([p + new])).logits[0, len(p) - 1:-1]
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(lps), ref, atol=1e-4)
    greedy = eng.generate(prompts, 8, temperature=0.0)
    for p, g in zip(prompts, greedy):  # left padding changes nothing
        assert eng.generate([p], 8, temperature=0.0)[0][0] == g[0]
    eps = rollout.rollout(eng, tok, prompts[:2], max_turns=2, max_response_len=16)  # sandbox.run_code
    assert all(len(e.ids) == len(e.mask) == len(e.sampler_logp) and e.response_len <= 16 for e in eps)
