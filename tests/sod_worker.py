"""Runs train_sod.main under `python` or `torchrun` (tests/test_sod.py), with a scripted rollout engine or the real
HF engine.

    python tests/sod_worker.py [--scripted | --lengths | --fake_vllm] [--fail_rank=R] [--sgd] [--dump_engine] \
        -- --out_dir OUT --max_steps 2 ...        (everything after -- is train_sod's)

--scripted: every episode calls the tool once (`print(2 + 3)`) and then answers 5 or 6 (a coin flip from the turn's
seed, which rollout draws from torch's global RNG, so resume must restore it). --lengths: the same script, but a pure
function of the prompt: its thinking is 0-3 sentences long and its answer depends on the prompt and on which copy of
the group it is, so episodes differ in length (and micro-batch counts differ between ranks) and one process sees
exactly the episodes that two do.
Either engine reports the true log-probs of what it emits under its own copy of the student (the train-vs-sampler
mismatch must be ~0) and behaves like vLLM's sleep mode: it refuses to sample while its weights or its KV cache
sleep, and a weight update wakes the weights only. Its update_weights is strict, as the engine interface says.
--fake_vllm: rollout.VLLMEngine on the vLLM stand-in (tests/fake_vllm.py), which runs a copy of the student: the
same script, except that on rank 1 the first turn thinks on until only the tool call, its result and half of the
answer fit in the tokens it may generate (max_tokens), so that its episode runs into the response budget; the toy
problems carry the paper's tool schema (BPE-tokenized by the toy tokenizer, unlike the toy's own).
--fail_rank=R: the scripted engine raises RuntimeError("injected") on rank R at its first turn, and writes the time to
OUT/failed_at.
--sgd: plain SGD instead of AdamW, so the update is linear in the gradient (no Adam sign-flips of ~0 gradients).
--dump_engine: each rank writes its engine's weights to OUT/engine_rank{r}.pt at the end (the real HF engine).
Every call of train_sod.micro_batches appends its number of groups to OUT/micro_batches_rank{r}.txt, every call of
train_sod.sample_episodes each episode's finish, overlong and lengths to OUT/episodes_rank{r}.jsonl.
"""
import copy
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TURN_1 = ('<think>\nI use the tool.%s\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
          '{"code": "print(2 + 3)"}}\n</tool_call><|im_end|>')
TURN_2 = "<think>\nIt printed it.\n</think>\n\nThe answer is \\boxed{%d}.<|im_end|>"


class ScriptedEngine:
    def __init__(self, model, tok, path, deterministic, fail=False, out_dir=None):
        self.model, self.tok, self.deterministic = copy.deepcopy(model).eval(), tok, deterministic
        self.asleep, self.done, self.fail, self.out_dir = set(), [], fail, out_dir
        print(f"scripted engine: model path {path}", flush=True)

    def submit(self, key, p, max_new_tokens, temperature, top_p, seed):
        if self.fail:
            with open(os.path.join(self.out_dir, "failed_at"), "w") as f:
                f.write(str(time.time()))
            raise RuntimeError("injected")
        if self.asleep:
            raise RuntimeError(f"engine: sampling while {sorted(self.asleep)} asleep (vLLM would wait forever)")
        first = self.tok.decode(p).count("<tool_response>") == 0
        if self.deterministic:  # key: the episode's index, so copies of a prompt (contiguous, G even) alternate
            text = TURN_1 % (" Let me think." * 12 * (sum(p) // 2 % 4)) if first else TURN_2 % (5 + (sum(p) + key) % 2)
        else:
            coin = torch.randint(0, 2, (), generator=torch.Generator().manual_seed(seed)).item()
            text = TURN_1 % "" if first else TURN_2 % (5 + coin)
        new = self.tok.encode(text, add_special_tokens=False)[:max_new_tokens]
        with torch.no_grad():
            logits = self.model(torch.tensor([p + new])).logits[0, len(p) - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
        self.done.append((key, new, lp.tolist(),
                          "stop" if new[-1] == self.tok.convert_tokens_to_ids("<|im_end|>") else "length"))

    def poll(self):
        done, self.done = self.done, []
        return done

    def update_weights(self, named_tensors):
        own = dict(self.model.named_parameters())  # tied weights once, as full_params yields them
        got = set()
        for name, t in named_tensors:
            if name not in own or own[name].shape != t.shape:
                raise KeyError(f"engine: no parameter {name} of shape {tuple(t.shape)}")
            own[name].data.copy_(t)
            got.add(name)
        if got != set(own):
            raise KeyError(f"engine: parameters not covered by the update: {sorted(set(own) - got)[:5]}")
        self.asleep.discard("weights")  # as vLLM: the push wakes the weights, the KV cache sleeps on

    def sleep(self):
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self):
        self.asleep = set()


def fake_vllm_engine(model, tok, kw):
    from fake_vllm import FakeVLLM

    import rollout
    import tools
    call, answer = TURN_1 % "", TURN_2 % 5
    n = lambda text: len(tok.encode(text, add_special_tokens=False))
    obs = len(tools.tool_response_ids(tok, ["5"], tools.tool_protocol("clean")))

    def policy(ids, sp):
        if "<tool_response>" in tok.decode(ids):
            return answer
        room = sp.max_tokens - n(call) - obs - n(answer) // 2  # " a" is one token
        return TURN_1 % (" a" * room) if os.environ.get("RANK") == "1" else call

    FakeVLLM(tok, model, policy).install()
    path = tempfile.mkdtemp(prefix="fake_vllm_")
    model.config.save_pretrained(path)  # what VLLMEngine reads the parameter names from
    engine = rollout.VLLMEngine(path, tok, kw["seed"], kw["gpu_memory_utilization"], kw["max_model_len"])
    engine.device = "cpu"
    return engine


def install(args, out_dir):
    import rollout
    import train_sod
    engines, rank = [], os.environ.get("RANK", "0")
    real_make, real_mb, real_sample = rollout.make_engine, train_sod.micro_batches, train_sod.sample_episodes
    fail = any(a == f"--fail_rank={rank}" for a in args)

    def make_engine(backend, path, tok, model=None, **kw):
        assert path.startswith("toy:") or os.path.isfile(os.path.join(path, "config.json")), path  # loadable as is
        if "--scripted" in args or "--lengths" in args:
            engines.append(ScriptedEngine(model, tok, path, "--lengths" in args, fail, out_dir))
        elif "--fake_vllm" in args:
            engines.append(fake_vllm_engine(model, tok, kw))
        else:
            engines.append(real_make(backend, path, tok, model=model, **kw))
        return engines[-1]

    def sample_episodes(*a, **kw):
        eps = real_sample(*a, **kw)
        os.makedirs(out_dir, exist_ok=True)  # rank 0 makes the run directory; another rank may get here first
        with open(os.path.join(out_dir, f"episodes_rank{rank}.jsonl"), "a") as f:
            f.writelines(json.dumps(dict(finish=e.finish, overlong=e.overlong, response_len=e.response_len,
                                         prompt_len=len(e.prompt_ids))) + "\n" for e in eps)
        return eps

    def micro_batches(lengths, max_tokens):
        groups = real_mb(lengths, max_tokens)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"micro_batches_rank{os.environ.get('RANK', '0')}.txt"), "a") as f:
            f.write(f"{len(groups)}\n")
        return groups

    if "--fake_vllm" in args:  # the paper's tool schema, which the toy tokenizer leaves to BPE (~170 tokens): the
        import tools
        import toy  # prompts as rolled out are far longer than the filter measures them (without it)
        real_problems = toy.problems
        toy.problems = lambda *a, **kw: [dict(p, tools=tools.TOOLS) for p in real_problems(*a, **kw)]
    rollout.make_engine, train_sod.micro_batches = make_engine, micro_batches
    train_sod.sample_episodes = sample_episodes
    if "--sgd" in args:
        torch.optim.AdamW = lambda params, lr, **kw: torch.optim.SGD(params, lr=lr)
    return engines


if __name__ == "__main__":
    i = sys.argv.index("--")
    flags, argv = sys.argv[1:i], sys.argv[i + 1:]
    out_dir = argv[argv.index("--out_dir") + 1]
    engines = install(flags, out_dir)
    import train_sod

    def main():
        train_sod.main(argv)
        if "--dump_engine" in flags:
            torch.save(engines[0].model.state_dict(), os.path.join(out_dir, f"engine_rank{os.environ['RANK']}.pt"))
    train_sod.run(main)  # as train_sod.py ends: a failed rank exits at once, no gloo thread meets finalization
