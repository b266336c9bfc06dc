"""rollout.py: tool-call parsing, the token-in/token-out agent loop in both modes (scripted engines), continuous
scheduling, sampling, HFEngine end to end (seeded episodes whatever the tool timing), weight updates, the vLLM engine
against the stand-in of tests/fake_vllm.py (sleep state, environment, request flow, log-probs), engine choice."""
import random
import threading
import time

import pytest
import torch

import models
import rollout
import tools
from sandbox import ExecResult


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return models.make_toy_tokenizer()


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def prompt(tok, question="What is 6 * 7?"):
    return tok.apply_chat_template([{"role": "user", "content": question}], tools=tools.TOOLS,
                                   add_generation_prompt=True, tokenize=True, return_dict=False)


def tool_turn(results):
    """What Qwen3's template puts between an assistant turn's <|im_end|> and the next assistant turn, by hand."""
    body = "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)
    return f"\n<|im_start|>user{body}<|im_end|>\n<|im_start|>assistant\n"


CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "%s"}}\n</tool_call>'


def ok(code):
    return {"name": "code_interpreter", "arguments": {"code": code}}

# -----------------------------------------------------------------------------
# parse_tool_calls


@pytest.mark.parametrize("text, want", [
    ("no call here", []),
    ("", []),
    (CALL % "print(1)", [ok("print(1)")]),
    ("Let me compute.\n" + CALL % "a=1\\nprint(a)" + "\nthen", [ok("a=1\nprint(a)")]),
    (CALL % "a=1" + " and " + CALL % "b=2", [ok("a=1"), ok("b=2")]),
    ('<tool_call>{"name": "code_interpreter", "arguments": "{\\"code\\": \\"x\\"}"}</tool_call>', [ok("x")]),
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ("<tool_call></tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>', "unknown tool 'python'"),
    ('<tool_call>{"arguments": {"code": "1"}}</tool_call>', "unknown tool None"),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"src": "1"}}</tool_call>', 'string argument "code"'),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": 5}}</tool_call>', 'string argument "code"'),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": null}}</tool_call>', 'string argument "code"'),
    ('<tool_call>{"name": "code_interpreter"}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "code_interpreter", "arguments": [1]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "code_interpreter", "arguments": "{code: 1}"}</tool_call>', "must be a JSON object"),
    ('<tool_call>["code_interpreter"]</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "code_interpreter", "arguments": {"code": "1"}}', "unclosed"),
])
def test_parse_tool_calls(text, want):
    got = tools.parse_tool_calls(text)
    if isinstance(want, str):
        assert len(got) == 1 and set(got[0]) == {"error"} and want in got[0]["error"]
    else:
        assert got == want


def test_parse_keeps_good_calls_next_to_bad_ones():
    got = tools.parse_tool_calls(CALL % "a=1" + "<tool_call>{oops}</tool_call>" + CALL % "b=2" + "<tool_call>{")
    assert got[0] == ok("a=1") and "not valid JSON" in got[1]["error"] and got[2] == ok("b=2")
    assert "unclosed" in got[3]["error"] and len(got) == 4

# -----------------------------------------------------------------------------
# the agent loop with scripted engines


def test_tool_response_ids_prefix_property(tok):
    chat = [{"role": "user", "content": "hi"}]
    turn = {"role": "assistant", "content": "", "reasoning_content": "think",
            "tool_calls": [{"type": "function", "function": {"name": "code_interpreter", "arguments": {"code": "1"}}}]}
    results = ["4", "Error: x"]
    before = tok.apply_chat_template(chat + [turn], tools=tools.TOOLS, tokenize=True, return_dict=False)
    after = tok.apply_chat_template(chat + [turn] + [{"role": "tool", "content": r} for r in results],
                                    tools=tools.TOOLS, add_generation_prompt=True, tokenize=True, return_dict=False)
    obs = tools.tool_response_ids(tok, results, tools.tool_protocol())
    end = len(before) - 1  # before ends with "<|im_end|>\n"; appended ids continue right after <|im_end|>
    assert after == before[:end] + obs
    assert obs == enc(tok, tool_turn(results))


class Scripted(rollout.Engine):
    """Plays a script per episode: script(prompt_ids) -> the turn's text; every poll finishes all queued turns. The
    log-prob of the k-th token of an episode's n-th turn is -(n + k / 1000), so every recorded log-prob says where
    it came from. Records each poll's batch size and each submission (key, turn)."""

    def __init__(self, tok, script):
        self.tok, self.script, self.batches, self.submitted, self.queue = tok, script, [], [], []

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        n = self.tok.decode(ids).count("<|im_start|>assistant")
        self.submitted.append((key, n))
        t = enc(self.tok, self.script(ids))[:max_new_tokens]
        self.queue.append((key, t, [-(n + k / 1000) for k in range(len(t))], "stop"))

    def poll(self):
        out, self.queue = self.queue, []
        self.batches.append(len(out))
        return out


def same_script(tok, turns):
    """Every episode plays `turns` in order (turn i when its context holds i tool responses)."""
    return Scripted(tok, lambda p: turns[min(tok.decode(p).count("<tool_response>"), len(turns) - 1)])


MODES = ["continuous", "sync"]


def fake_exec(code, timeout, echo=True):
    if "boom" in code:
        return ExecResult("error", "", "ZeroDivisionError: division by zero", 0.01)
    if "sleep" in code:
        return ExecResult("timeout", "partial", "", timeout)
    return ExecResult("ok", str(eval(code.removeprefix("print(")[:-1])) + "\n", "", 0.01)


@pytest.mark.parametrize("mode", MODES)
def test_agent_loop_exact_ids_masks_steps_and_logprobs(tok, mode):
    turns = [(CALL % "print(6 * 7)") + "<|im_end|>", (CALL % "boom") + "<|im_end|>",
             "The answer is \\boxed{42}.<|im_end|>"]
    p = prompt(tok)
    eps = rollout.rollout(same_script(tok, turns), tok, [p, p], max_turns=5, max_response_len=500, execute=fake_exec,
                          mode=mode)
    t1, t2, t3 = (enc(tok, t) for t in turns)
    o1, o2 = enc(tok, tool_turn(["42"])), enc(tok, tool_turn(["ZeroDivisionError: division by zero"]))
    lp = lambda n, t: [-(n + k / 1000) for k in range(len(t))]
    for ep in eps:
        assert ep.ids == p + t1 + o1 + t2 + o2 + t3 and ep.prompt_ids == p
        assert ep.mask == [0] * len(p) + [1] * len(t1) + [0] * len(o1) + [1] * len(t2) + [0] * len(o2) + [1] * len(t3)
        assert ep.step_ids == ([-1] * len(p) + [0] * len(t1) + [-1] * len(o1) + [1] * len(t2) + [-1] * len(o2)
                               + [2] * len(t3))
        assert ep.sampler_logp == ([0.0] * len(p) + lp(1, t1) + [0.0] * len(o1) + lp(2, t2) + [0.0] * len(o2)
                                   + lp(3, t3))
        assert ep.finish == "answer" and ep.num_turns == 3 and ep.num_tool_calls == 2 and ep.tool_errors == 1
        assert ep.response_len == len(ep.ids) - len(p) and not ep.overlong
        assert [t["status"] for t in ep.turns] == [["ok"], ["error"], []]
        assert ep.turns[0]["calls"] == [ok("print(6 * 7)")] and ep.turns[2]["calls"] == []
        assert ep.response_text == tok.decode(t1 + o1 + t2 + o2 + t3)
        assert ep.score is None and ep.acc is None and ep.pred is None and ep.meta == {}


@pytest.mark.parametrize("mode", MODES)
def test_episodes_finish_independently_and_only_active_ones_are_sampled(tok, mode):
    quick, slow = prompt(tok, "What is 1 + 1?"), prompt(tok, "What is 6 * 7?")

    def script(p):
        if "1 + 1" in tok.decode(p):
            return "\\boxed{2}<|im_end|>"
        return (CALL % "print(6 * 7)") + "<|im_end|>" if tok.decode(p).count("<tool_response>") < 2 else "42<|im_end|>"
    eng = Scripted(tok, script)
    a, b, c = rollout.rollout(eng, tok, [quick, slow, quick], max_turns=8, max_response_len=500, execute=fake_exec,
                              mode=mode)
    assert eng.batches == [3, 1, 1]
    assert (a.num_turns, b.num_turns, c.num_turns) == (1, 3, 1) and b.num_tool_calls == 2
    assert a.ids == quick + enc(tok, "\\boxed{2}<|im_end|>") and a.ids == c.ids


@pytest.mark.parametrize("mode", MODES)
def test_malformed_calls_become_error_observations(tok, mode):
    bad = '<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call><|im_end|>'
    seen = []
    ep = rollout.rollout(same_script(tok, [bad, "ok<|im_end|>"]), tok, [prompt(tok)], max_turns=4,
                         max_response_len=500, execute=lambda code, timeout, echo=True: seen.append(code), mode=mode)[0]
    assert seen == [] and ep.tool_errors == 1 and ep.num_tool_calls == 1 and ep.turns[0]["status"] == ["malformed"]
    obs = ep.turns[0]["observations"][0]
    assert obs.startswith("Error: unknown tool 'python'")
    head = prompt(tok) + enc(tok, bad) + enc(tok, tool_turn([obs]))
    assert ep.ids[:len(head)] == head


@pytest.mark.parametrize("mode", MODES)
def test_tool_calls_of_a_turn_run_concurrently(tok, mode):
    barrier = threading.Barrier(4, timeout=10)  # every call waits for the 3 others: sequential execution would fail

    def execute(code, timeout, echo=True):
        barrier.wait()
        return ExecResult("ok", "1\n", "", 0.0)
    turns = [(CALL % "1") * 2 + "<|im_end|>", "done<|im_end|>"]
    eps = rollout.rollout(same_script(tok, turns), tok, [prompt(tok)] * 2, max_turns=3, max_response_len=500,
                          execute=execute, mode=mode)
    head = prompt(tok) + enc(tok, turns[0]) + enc(tok, tool_turn(["1", "1"]))  # both results in one user turn
    assert all(e.num_tool_calls == 2 and e.turns[0]["status"] == ["ok", "ok"] and e.ids[:len(head)] == head
               for e in eps)


def test_continuous_next_turn_starts_when_its_own_tools_are_back(tok):
    """Episode 0's tool call returns only once episode 1 has submitted its third turn: continuous rollouts get
    there (episode 1 never waits for episode 0's tool); a turn barrier would wait for the call until it times out."""
    third = threading.Event()

    class Watch(Scripted):
        def submit(self, key, ids, *a):
            super().submit(key, ids, *a)
            if self.submitted[-1] == (1, 3):
                third.set()

    def execute(code, timeout, echo=True):
        if code == "slow":
            return ExecResult("ok" if third.wait(10) else "timeout", "1\n", "", 0.0)
        return ExecResult("ok", "2\n", "", 0.0)
    eng = Watch(tok, lambda p: ((CALL % ("slow" if "1 + 1" in tok.decode(p) else "fast")) + "<|im_end|>"
                                if tok.decode(p).count("<tool_response>") < 2 else "done<|im_end|>"))
    a, b = rollout.rollout(eng, tok, [prompt(tok, "What is 1 + 1?"), prompt(tok)], max_turns=5, max_response_len=500,
                           execute=execute)
    assert a.turns[0]["status"] == ["ok"] and a.num_turns == b.num_turns == 3
    assert eng.submitted.index((1, 3)) < eng.submitted.index((0, 2))


def test_tool_pool_is_sized_to_the_load(tok):
    barrier = threading.Barrier(24, timeout=10)  # 24 episodes' calls all out at once: more than any fixed pool of 16

    def execute(code, timeout, echo=True):
        barrier.wait()
        return ExecResult("ok", "1\n", "", 0.0)
    eps = rollout.rollout(same_script(tok, [(CALL % "1") + "<|im_end|>", "done<|im_end|>"]), tok, [prompt(tok)] * 24,
                          max_turns=3, max_response_len=500, execute=execute)
    assert all(e.turns[0]["status"] == ["ok"] for e in eps)


@pytest.mark.parametrize("mode", MODES)
def test_turn_limit(tok, mode):
    call = (CALL % "print(6 * 7)") + "<|im_end|>"
    ep = rollout.rollout(same_script(tok, [call]), tok, [prompt(tok)], max_turns=3, max_response_len=10_000,
                         execute=fake_exec, mode=mode)[0]
    assert ep.finish == "max_turns" and ep.num_turns == 3 and not ep.overlong
    assert ep.num_tool_calls == 2  # the last turn's call is never run: no turn is left to read its result
    assert ep.ids[-len(enc(tok, call)):] == enc(tok, call) and ep.mask[-1] == 1


@pytest.mark.parametrize("mode", MODES)
def test_length_limits(tok, mode):
    p = prompt(tok)
    long_turn = "The answer is " + "very " * 40 + "\\boxed{42}.<|im_end|>"
    ep = rollout.rollout(same_script(tok, [long_turn]), tok, [p], max_turns=4, max_response_len=25,
                         execute=fake_exec, mode=mode)[0]  # cut inside the first turn
    assert ep.ids == p + enc(tok, long_turn)[:25] and sum(ep.mask) == 25 and ep.response_len == 25
    assert ep.overlong and ep.finish == "length"
    call = (CALL % "print(10 ** 30)") + "<|im_end|>"
    n_call = len(enc(tok, call))
    n_obs = len(enc(tok, tool_turn(["1" + "0" * 30])))
    ep = rollout.rollout(same_script(tok, [call]), tok, [p], max_turns=10, max_response_len=2 * n_call + n_obs,
                         execute=fake_exec, mode=mode)[0]  # the second tool output would leave no room for a reply
    assert ep.overlong and ep.finish == "length" and ep.num_turns == 2 and ep.response_len == 2 * n_call + n_obs
    limit = 2 * n_call + 2 * n_obs + 5
    ep = rollout.rollout(same_script(tok, [call]), tok, [p], max_turns=10, max_response_len=limit,
                         execute=fake_exec, mode=mode)[0]  # 5 tokens left for the third turn: sampled, then cut
    assert ep.overlong and ep.finish == "length" and ep.num_turns == 3 and ep.response_len == limit
    assert ep.ids[-5:] == enc(tok, call)[:5] and ep.mask[-5:] == [1] * 5


@pytest.mark.parametrize("mode", MODES)
def test_observation_limit_and_statuses(tok, mode):
    call = (CALL % "print(10 ** 300)") + "<|im_end|>"
    ep = rollout.rollout(same_script(tok, [call, "done<|im_end|>"]), tok, [prompt(tok)], max_turns=3,
                         max_response_len=10_000, tools=tools.tool_protocol(max_chars=50), execute=fake_exec,
                         mode=mode)[0]
    obs = ep.turns[0]["observations"][0]
    assert obs == "1" + "0" * 49 + "\n... [truncated 251 characters]"
    assert f"<tool_response>\n{obs}\n</tool_response>" in tok.decode(ep.ids)
    ep = rollout.rollout(same_script(tok, [(CALL % "sleep") + "<|im_end|>", "done<|im_end|>"]), tok, [prompt(tok)],
                         max_turns=4, max_response_len=500, execute=fake_exec, mode=mode)[0]
    assert ep.tool_timeouts == 1 and ep.tool_errors == 0 and ep.turns[0]["status"] == ["timeout"]
    assert ep.turns[0]["observations"][0].startswith("partial\nTimeoutError")


@pytest.mark.parametrize("mode", MODES)
def test_eos_ends_the_episode(tok, mode):
    turn = (CALL % "print(1)") + "<|endoftext|>"
    ep = rollout.rollout(same_script(tok, [turn]), tok, [prompt(tok)], max_turns=4, max_response_len=500,
                         execute=fake_exec, mode=mode)[0]
    assert ep.finish == "answer" and ep.num_turns == 1 and ep.num_tool_calls == 0 and ep.mask[-1] == 1


def test_retokenize_drift(tok):
    canonical = enc(tok, " answer")
    split = enc(tok, " ") + enc(tok, "answer")
    assert canonical != split and tok.decode(canonical) == tok.decode(split)
    eps = [rollout.Episode([], ids, [1] * len(ids), [0.0] * len(ids)) for ids in (canonical, split)]
    assert rollout.retokenize_drift(eps, tok) == 0.5
    assert rollout.retokenize_drift(eps[:1], tok) == 0.0

# -----------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("temperature, top_p, want", [
    (1.0, 1.0, [0.5, 0.3, 0.15, 0.05]),
    (1.0, 0.7, [0.625, 0.375, 0.0, 0.0]),  # 0.5 < 0.7 -> take the second token too, then 0.8 >= 0.7: stop
    (0.5, 1.0, [0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365]),  # p^(1/T), renormalised
    (0.5, 0.7, [0.25 / 0.34, 0.09 / 0.34, 0.0, 0.0]),  # temperature first, then the nucleus of the tempered p
])
def test_sample_token_distribution(temperature, top_p, want):
    torch.manual_seed(0)
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(100_000, 1) + 3.0  # a shift changes nothing
    got = torch.bincount(rollout.sample_token(logits, temperature, top_p), minlength=4).float() / 100_000
    assert torch.allclose(got, torch.tensor(want), atol=0.006)
    assert all(g == 0 for g, w in zip(got.tolist(), want) if w == 0)


def test_sample_token_unsorted_vocabulary_and_mixed_rows():
    """Probabilities in no particular order, an impossible token, and rows with and without a nucleus in one batch:
    each row's frequencies match its own distribution (top_p = 1 takes the path without the sort)."""
    torch.manual_seed(0)
    p = torch.tensor([0.15, 0.0, 0.5, 0.05, 0.3])
    logits = p.log().repeat(200_000, 1)
    top_p = torch.tensor([1.0, 0.7]).repeat(100_000)
    tok = rollout.sample_token(logits, 1.0, top_p)
    full = torch.bincount(tok[0::2], minlength=5).float() / 100_000
    nucleus = torch.bincount(tok[1::2], minlength=5).float() / 100_000
    assert torch.allclose(full, p, atol=0.006) and full[1] == 0
    assert torch.allclose(nucleus, torch.tensor([0.0, 0.0, 0.625, 0.0, 0.375]), atol=0.006)
    assert nucleus[[0, 1, 3]].sum() == 0
    u = torch.tensor([0.0, 1.0, 1.0 - 1e-9])  # the ends of the inverse CDF: never the zero-probability token
    assert rollout.sample_token(p.log().repeat(3, 1), 1.0, 1.0, u).tolist() == [0, 4, 4]


def test_sample_token_greedy():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert rollout.sample_token(logits, 0.0, 0.5).tolist() == [1, 0]

# -----------------------------------------------------------------------------
# HFEngine


@pytest.fixture(scope="module")
def model(tok):
    return models.tiny_qwen3(tok, "tiny", seed=3)


def full_forward_logp(model, ids):
    """log p(ids[t] | ids[:t]) for t >= 1 from one plain forward pass over the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.9), (0.7, 1.0)])
def test_hf_engine_logprobs_are_raw_full_forward_logprobs(tok, model, temperature, top_p):
    eng = rollout.HFEngine(model, tok)
    prompts = [prompt(tok), prompt(tok)[:-7], [1, 2, 3]]
    torch.manual_seed(0)
    outs = eng.generate(prompts, 12, temperature=temperature, top_p=top_p)
    for p, (new, lps, finish) in zip(prompts, outs):
        assert 1 <= len(new) <= 12 and finish == ("stop" if new[-1] in (0, 2) else "length")
        assert all(t not in (0, 2) for t in new[:-1])  # nothing after a stop token
        ref = full_forward_logp(model, p + new)[len(p) - 1:]
        assert torch.allclose(torch.tensor(lps), ref, atol=1e-4)


def test_hf_engine_batched_greedy_equals_one_by_one(tok, model):
    eng = rollout.HFEngine(model, tok)
    prompts = [prompt(tok), prompt(tok)[:-7], [1, 2, 3], prompt(tok, "What is 12345 * 678?")]
    batched = eng.generate(prompts, 10, temperature=0.0)
    for p, (new, lps, _) in zip(prompts, batched):
        alone = eng.generate([p], 10, temperature=0.0)[0]
        assert alone[0] == new and torch.allclose(torch.tensor(alone[1]), torch.tensor(lps), atol=1e-4)
        ids = list(p)  # independent greedy: argmax of a full forward, token by token
        for _ in range(len(new)):
            with torch.no_grad():
                ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
        assert ids[len(p):] == new


def test_hf_engine_owns_a_copy_and_loads_weights(tok):
    mine, other = models.tiny_qwen3(tok, "tiny", seed=5), models.tiny_qwen3(tok, "tiny", seed=11)
    eng, p = rollout.HFEngine(mine, tok), prompt(tok)
    before = eng.generate([p], 8, temperature=0.0)[0]
    with torch.no_grad():  # the trainer changes its weights: the engine keeps sampling from its own copy
        for w in mine.parameters():
            w.add_(torch.randn_like(w))
    assert eng.generate([p], 8, temperature=0.0)[0] == before
    eng.update_weights(other.state_dict().items())
    want = rollout.HFEngine(other, tok).generate([p], 8, temperature=0.0)[0]
    got = eng.generate([p], 8, temperature=0.0)[0]
    assert got[0] == want[0] and torch.allclose(torch.tensor(got[1]), torch.tensor(want[1]))
    assert not torch.allclose(torch.tensor(got[1]), torch.tensor(before[1]))
    with pytest.raises(KeyError):
        eng.update_weights([("model.no_such_layer.weight", torch.zeros(1))])


def test_hf_engine_admits_turns_mid_batch(tok, model):
    """Turns submitted while others decode (continuous batching: merged caches, padding, rows leaving) sample what
    each samples alone with the same seed, with log-probs equal to a full forward pass."""
    eng = rollout.HFEngine(model, tok)
    prompts = [prompt(tok), [1, 2, 3], prompt(tok, "What is 12345 * 678?"), prompt(tok)[:-7]]
    got = {}
    for step in range(200):
        if step in (0, 3, 4, 9):
            k = (0, 3, 4, 9).index(step)
            eng.submit(k, prompts[k], 6 + 3 * k, 1.0 if k % 2 else 0.8, 0.95, 100 + k)
        got |= {key: (new, lps) for key, new, lps, _ in eng.poll()}
    assert sorted(got) == [0, 1, 2, 3] and not eng.rows and not eng.queue
    for k, p in enumerate(prompts):
        alone = rollout.HFEngine(model, tok)
        alone.submit("a", p, 6 + 3 * k, 1.0 if k % 2 else 0.8, 0.95, 100 + k)
        (_, new, lps, _), = [r for _ in range(50) for r in alone.poll()]
        assert got[k][0] == new and torch.allclose(torch.tensor(got[k][1]), torch.tensor(lps), atol=1e-5)
        ref = full_forward_logp(model, p + new)[len(p) - 1:]
        assert torch.allclose(torch.tensor(lps), ref, atol=1e-4)


def test_hf_engine_weight_updates_are_checked(tok):
    mine, other = models.tiny_qwen3(tok, "tiny", seed=5), models.tiny_qwen3(tok, "tiny", seed=11)
    eng = rollout.HFEngine(mine, tok)
    sd = other.state_dict()
    eng.update_weights((k, v.to(torch.bfloat16)) for k, v in sd.items() if k != "lm_head.weight")  # tied: absent
    for k, v in eng.model.state_dict().items():  # every parameter, the tied head included, is the bf16 value
        assert v.dtype == torch.float32 and torch.equal(v, sd[k].to(torch.bfloat16).float())
    with pytest.raises(KeyError, match="no parameter"):
        eng.update_weights([("model.no_such_layer.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="shape"):
        eng.update_weights([("model.norm.weight", torch.zeros(3))])
    with pytest.raises(KeyError, match="left 1 parameters"):  # a rank that got no weights must not sample silently
        eng.update_weights((k, v) for k, v in sd.items() if k != "model.layers.1.mlp.up_proj.weight")
    eng.sleep()
    with pytest.raises(AssertionError, match="wake_up"):
        eng.generate([prompt(tok)], 4)
    eng.wake_up()
    assert len(eng.generate([prompt(tok)], 4)[0][0]) >= 1


def test_hf_rollouts_are_the_same_whatever_the_tool_timing(tok, model):
    """Random tool delays reorder when episodes come back, so the HF engine batches different turns together:
    the episodes stay those of a run without delays, and of a sync run (same seed)."""
    hf = rollout.HFEngine(model, tok)

    class ForcedCalls(rollout.Engine):  # episode i calls the tool in its first 1 + i % 3 turns, then the model samples
        def __init__(self):
            self.forced = []

        def submit(self, key, ids, max_new, temperature, top_p, seed):
            if tok.decode(ids).count("<|im_start|>assistant") <= 1 + key % 3:
                t = enc(tok, (CALL % f"print({key} + {seed % 100})") + "<|im_end|>")
                self.forced.append((key, t, full_forward_logp(model, ids + t)[len(ids) - 1:].tolist(), "stop"))
            else:
                hf.submit(key, ids, max_new, temperature, top_p, seed)

        def poll(self):
            out, self.forced = self.forced, []
            return out + hf.poll()
    rng = random.Random()  # unseeded on purpose: every run interleaves differently

    def delayed(code, timeout, echo=True):
        time.sleep(rng.uniform(0, 0.03))
        return fake_exec(code, timeout)
    prompts = [prompt(tok, f"What is {i} * 7?") for i in range(6)]
    kw = dict(max_turns=6, max_response_len=160, temperature=1.0, top_p=0.95, seed=5)
    base = rollout.rollout(ForcedCalls(), tok, prompts, execute=fake_exec, **kw)
    assert sum(e.num_turns for e in base) > 2 * len(base)
    for mode, execute in [("continuous", delayed), ("continuous", delayed), ("sync", delayed)]:
        for a, b in zip(base, rollout.rollout(ForcedCalls(), tok, prompts, execute=execute, mode=mode, **kw)):
            assert a.ids == b.ids and a.mask == b.mask and a.finish == b.finish and a.turns == b.turns
            assert torch.allclose(torch.tensor(a.sampler_logp), torch.tensor(b.sampler_logp), atol=1e-5)
    other = rollout.rollout(ForcedCalls(), tok, prompts, execute=fake_exec, **(kw | {"seed": 6}))
    assert any(a.ids != b.ids for a, b in zip(base, other))


def test_hf_end_to_end_with_the_real_sandbox(tok, model):
    """First turn forced to call the tool; the real sandbox runs it; the tiny model samples the rest. Every sampled
    token's recorded log-prob equals a full forward pass over the final ids (KV cache across tool output)."""
    import sandbox
    eng = rollout.HFEngine(model, tok)
    forced = (CALL % "2 ** 100") + "<|im_end|>"

    class ForcedFirstTurn:
        def __init__(self):
            self.done = []

        def submit(self, key, p, *args):
            if "<tool_response>" in tok.decode(p):
                return eng.submit(key, p, *args)
            ids = enc(tok, forced)
            self.done.append((key, ids, full_forward_logp(model, p + ids)[len(p) - 1:].tolist(), "stop"))

        def poll(self):
            done, self.done = self.done + eng.poll(), []
            return done
    torch.manual_seed(1)
    p = prompt(tok)
    eps = rollout.rollout(ForcedFirstTurn(), tok, [p, p], max_turns=3, max_response_len=120,
                          execute=sandbox.run_code, temperature=1.0, top_p=0.95)
    for ep in eps:
        assert ep.turns[0]["status"] == ["ok"] and ep.turns[0]["observations"] == ["1267650600228229401496703205376"]
        head = p + enc(tok, forced) + enc(tok, tool_turn(["1267650600228229401496703205376"]))
        assert ep.ids[:len(head)] == head and ep.num_turns >= 2 and ep.response_len <= 120
        ref = full_forward_logp(model, ep.ids)
        got = torch.tensor(ep.sampler_logp[1:])
        m = torch.tensor(ep.mask[1:], dtype=torch.bool)
        assert m.sum() > len(enc(tok, forced)) and torch.allclose(got[m], ref[m], atol=1e-4)
        assert (got[~m] == 0).all()

# -----------------------------------------------------------------------------
# VLLMEngine's calls, against a stand-in for the vllm package (no vLLM here); engine choice


@pytest.fixture
def fake_vllm(tok, model, tmp_path, monkeypatch):
    """The stand-in (tests/fake_vllm.py) installed as the vllm package; its LLM runs a copy of `model`."""
    import gc

    from fake_vllm import FakeVLLM
    fake = FakeVLLM(tok, model)
    fake.install(monkeypatch)
    model.config.save_pretrained(tmp_path)  # the engine reads the HF names and shapes from the config
    fake.path = str(tmp_path)
    yield fake
    gc.unfreeze()  # the stand-in's LLM froze the heap, as vLLM's start-up does


def test_vllm_engine_environment(tok, fake_vllm, monkeypatch):
    import torch.distributed as dist
    monkeypatch.delenv("RANK", raising=False)  # plain `python`: no launcher variables
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    rollout.VLLMEngine(fake_vllm.path, tok, seed=3)
    kw = fake_vllm.kw
    assert kw["distributed_executor_backend"] is None and kw["enable_sleep_mode"] and kw["seed"] == 3
    assert kw["logprobs_mode"] == "raw_logprobs" and kw["enable_prefix_caching"]
    # under torchrun: the launcher's variables are set, and constructing is collective (the stand-in's barrier)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        rollout.VLLMEngine(fake_vllm.path, tok)
    finally:
        dist.destroy_process_group()
    assert fake_vllm.kw["distributed_executor_backend"] == "external_launcher"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_engine_rollouts_are_seeded_per_turn(tok, fake_vllm):
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    prompts = [prompt(tok, f"What is {i} * 7?") for i in range(5)]
    runs = [rollout.rollout(eng, tok, prompts, max_turns=6, max_response_len=500, execute=fake_exec, mode=m,
                            seed=11) for m in ("continuous", "sync")]
    adds = [e for e in fake_vllm.log if e[0] == "add"]
    assert len(adds) == 2 * 5 * 3 and len({rid for _, rid, _ in adds}) == len(adds)  # one unique id per turn
    assert sorted(s for _, _, s in adds[:15]) == sorted(rollout.turn_seed(11, i, t) for i in range(5) for t in range(3))
    for i, (a, b) in enumerate(zip(*runs)):
        assert a.ids == b.ids and a.sampler_logp == b.sampler_logp and a.finish == b.finish == "answer"
        assert a.turns[1]["observations"] == [str(rollout.turn_seed(11, i, 1) % 1000)]
        assert a.num_turns == 3


def test_vllm_engine_sleep_wake_and_weights(tok, model, fake_vllm):
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    eng.device = "cpu"  # no GPU here: the conversion's device
    p = prompt(tok)
    eng.submit("x", p, 50, 1.0, 1.0, 0)
    with pytest.raises(AssertionError, match="in flight"):  # sleep(mode="abort") would drop the turn
        eng.sleep()
    while not eng.poll():
        pass
    eng.sleep()
    assert fake_vllm.aborted == 0
    with pytest.raises(AssertionError, match="wake_up"):
        eng.generate([p], 50)
    sd = model.state_dict()
    eng.update_weights((k, v) for k, v in sd.items() if k != "lm_head.weight")  # tied: the embedding is enough
    assert [k for k, _, _ in fake_vllm.loaded] == [k for k in sd if k != "lm_head.weight"]
    assert {(d, dev) for _, d, dev in fake_vllm.loaded} == {(torch.bfloat16, "cpu")}
    assert fake_vllm.log[-2:] == [("wake_up", ["weights"]), ("reset_prefix_cache",)]
    with pytest.raises(AssertionError, match="kv_cache"):  # the KV cache still sleeps: sampling must not start
        eng.generate([p], 50)
    eng.wake_up()
    eng.wake_up()  # idempotent
    assert [e for e in fake_vllm.log if e[0] == "wake_up"] == [("wake_up", ["weights"]), ("wake_up", ["kv_cache"])]
    assert eng.generate([p], 50)[0][2] == "stop"
    with pytest.raises(KeyError, match="no parameter"):
        eng.update_weights([("model.no_such_layer.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="shape"):
        eng.update_weights([("model.norm.weight", torch.zeros(3))])
    with pytest.raises(KeyError, match="left 1 parameters"):
        eng.update_weights((k, v) for k, v in sd.items() if k != "model.norm.weight")


@pytest.mark.parametrize("fit", ["turn", "turn+tool"])
def test_vllm_engine_a_long_episode_ends_as_length_within_max_model_len(tok, fake_vllm, fit):
    """max_model_len leaves `room` < max_response_len tokens after the prompt, room measured in this tokenizer's
    tokens: the longest first turn fits, then: "turn", the tool result does not, and submitting the next turn would
    make vLLM raise (a prompt of >= max_model_len); "turn+tool", the next turn fits but vLLM would cap it at
    max_model_len, a cut the budget never saw. Either way the episode must end as a length cut, overlong, with no
    turn submitted past the limit."""
    p = prompt(tok)
    turn = max(len(enc(tok, CALL % f"print({n})" + "<|im_end|>")) for n in (0, 99, 999))  # the seeds' numbers
    tool = len(enc(tok, tool_turn(["999"])))
    room = turn + tool - 1 if fit == "turn" else turn + tool + 3
    eng = rollout.VLLMEngine(fake_vllm.path, tok, max_model_len=len(p) + room)
    for ep in rollout.rollout(eng, tok, [p, p], max_turns=6, max_response_len=200, execute=fake_exec, seed=3):
        assert ep.num_turns == 1 + (fit == "turn+tool") and ep.finish == "length" and ep.overlong
        assert ep.response_len <= room and len(ep.ids) <= len(p) + room
    with pytest.raises(ValueError, match="no room"):  # a prompt that leaves nothing: before any turn is submitted
        rollout.rollout(eng, tok, [p + [5] * room], max_turns=2, max_response_len=200, execute=fake_exec)


def test_vllm_engine_refuses_a_turn_vllm_ended_otherwise(tok, fake_vllm):
    """vLLM has five finish reasons (v1/engine/__init__.py): "abort", "error" and "repetition" are no length cut."""
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    fake_vllm.force_finish = "abort"
    with pytest.raises(RuntimeError, match="'abort'"):
        eng.generate([prompt(tok)], 20)


def trainer_logprobs(model, ids):
    """The trainer's log-probs of ids[1:] (train_sod.sequence_logprobs' arithmetic: fp32 logits, chunked)."""
    import common
    import sod_loss
    ids = torch.tensor([ids])
    with torch.no_grad():
        h = common.final_hidden_states(model, input_ids=ids)
        return sod_loss.token_logprobs(h[:, :-1], model.lm_head.weight, ids[:, 1:])[0]


def test_vllm_sampler_logprobs_are_the_trainers(tok, model, fake_vllm):
    """vLLM 0.33 runs the lm_head in the model dtype (bf16) unless hf_overrides={"head_dtype": "float32"}
    (config/model.py): every token would be sampled from bf16-rounded logits, and the mismatch metric would get a
    floor that hides a failed weight push. The stand-in rounds the logits to bf16 unless the override is given."""
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    prompts = [prompt(tok, f"What is {i} * 7?") for i in range(3)]
    eps = rollout.rollout(eng, tok, prompts, max_turns=4, max_response_len=300, execute=fake_exec, seed=5)
    for ep in eps:
        m = torch.tensor(ep.mask[1:], dtype=torch.bool)
        err = (torch.tensor(ep.sampler_logp[1:])[m] - trainer_logprobs(model, ep.ids)[m]).abs().max()
        assert m.sum() > 25 and err < 1e-5, err  # bf16 logits: ~1e-3 here
    assert fake_vllm.kw["hf_overrides"] == {"head_dtype": "float32"}


def test_vllm_engine_reads_flat_logprobs(tok, fake_vllm):
    """logprobs=0 without flat_logprobs builds a dict and a Logprob per generated token (vllm/logprobs.py), ~2.6M
    objects per rank per step at the paper's size; the flat form is a few lists, read without building them."""
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    eps = rollout.rollout(eng, tok, [prompt(tok)] * 2, max_turns=4, max_response_len=300, execute=fake_exec, seed=5)
    assert all(ep.finish == "answer" for ep in eps) and len(fake_vllm.params) == 6
    assert all(sp.flat_logprobs and sp.logprobs == 0 for sp in fake_vllm.params)
    assert fake_vllm.materialised == 0  # no position indexed or iterated: no dict, no Logprob


def test_vllm_engine_sleeps_at_level_2(tok, model, fake_vllm):
    """Level 1 copies the weights to pinned host memory and back only for the push to overwrite them; level 2 drops
    them (v1/worker/gpu_worker.py), which is right while every wake of the weights is followed by a full push."""
    eng = rollout.VLLMEngine(fake_vllm.path, tok)
    eng.device = "cpu"
    p = prompt(tok)
    eng.generate([p], 50)
    eng.sleep()
    assert fake_vllm.log[-1] == ("sleep", 2)
    with pytest.raises(AssertionError, match="update_weights"):  # waking them unpushed would sample from garbage
        eng.wake_up()
    eng.update_weights((k, v) for k, v in model.state_dict().items() if k != "lm_head.weight")
    eng.wake_up()
    assert eng.generate([p], 50)[0][2] == "stop"
    llm = eng.llm  # the stand-in itself: weights woken from level 2 and never loaded do not sample
    llm.sleep(level=2)
    assert llm.wake_up() and fake_vllm.uninitialised
    with pytest.raises(RuntimeError, match="never loaded"):
        llm.llm_engine.step()


def test_vllm_engine_leaves_the_trainers_process_as_it_was(tok, fake_vllm, monkeypatch):
    """vLLM's start-up reseeds python, numpy and torch and, unless OMP_NUM_THREADS is set, leaves torch one thread
    (utils/torch_utils.py): the trainer's RNG streams and its CPU work (advantages, statistics) must not change."""
    import numpy as np
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        random.random(), np.random.rand(), torch.rand(3)  # the trainer has used its streams since it seeded them
        before = random.getstate(), np.random.get_state(), torch.get_rng_state()
        rollout.VLLMEngine(fake_vllm.path, tok, seed=1)
        assert torch.get_num_threads() == 2
        after = random.getstate(), np.random.get_state(), torch.get_rng_state()
        assert after[0] == before[0] and torch.equal(after[2], before[2])
        assert all(np.array_equal(a, b) for a, b in zip(after[1], before[1]))
    finally:
        torch.set_num_threads(1)


def test_make_engine(tok, model, capsys):
    eng = rollout.make_engine("hf", "unused", tok, model=model)
    assert isinstance(eng, rollout.HFEngine) and "rollout: hf engine" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert isinstance(rollout.make_engine("auto", "unused", tok, model=model), rollout.HFEngine)
        assert "rollout: hf engine (auto: no CUDA" in capsys.readouterr().out
        with pytest.raises(SystemExit, match="needs CUDA"):
            rollout.make_engine("vllm", "unused", tok)
    with pytest.raises(SystemExit, match="unknown backend"):
        rollout.make_engine("tgi", "unused", tok, model=model)
