"""Runs train_sod.main under `python` or `torchrun` (tests/test_sod.py), with a scripted rollout engine or the real
HF engine.

    python tests/sod_worker.py [--scripted | --lengths] [--sgd] [--dump_engine] -- --out_dir OUT --max_steps 2 ...
    (everything after -- is train_sod's)

--scripted: every episode calls the tool once (`print(2 + 3)`) and then answers 5 or 6 (a coin flip from the turn's
seed, which rollout draws from torch's global RNG, so resume must restore it). --lengths: the same script, but a pure
function of the prompt: its thinking is 0-3 sentences long and its answer depends on the prompt and on which copy of
the group it is, so episodes differ in length (and micro-batch counts differ between ranks) and one process sees
exactly the episodes that two do.
Either engine reports the true log-probs of what it emits under its own copy of the student (the train-vs-sampler
mismatch must be ~0) and behaves like vLLM's sleep mode: it refuses to sample while its weights or its KV cache
sleep, and a weight update wakes the weights only. Its update_weights is strict, as the engine interface says.
--sgd: plain SGD instead of AdamW, so the update is linear in the gradient (no Adam sign-flips of ~0 gradients).
--dump_engine: each rank writes its engine's weights to OUT/engine_rank{r}.pt at the end (the real HF engine).
Every call of train_sod.micro_batches appends its number of groups to OUT/micro_batches_rank{r}.txt.
"""
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TURN_1 = ('<think>\nI use the tool.%s\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
          '{"code": "print(2 + 3)"}}\n</tool_call><|im_end|>')
TURN_2 = "<think>\nIt printed it.\n</think>\n\nThe answer is \\boxed{%d}.<|im_end|>"


class ScriptedEngine:
    def __init__(self, model, tok, path, deterministic):
        self.model, self.tok, self.deterministic = copy.deepcopy(model).eval(), tok, deterministic
        self.asleep, self.done = set(), []
        print(f"scripted engine: model path {path}", flush=True)

    def submit(self, key, p, max_new_tokens, temperature, top_p, seed):
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


def install(args, out_dir):
    import rollout
    import train_sod
    engines = []
    real_make, real_mb = rollout.make_engine, train_sod.micro_batches

    def make_engine(backend, path, tok, model=None, **kw):
        assert path.startswith("toy:") or os.path.isfile(os.path.join(path, "config.json")), path  # loadable as is
        if "--scripted" in args or "--lengths" in args:
            engines.append(ScriptedEngine(model, tok, path, "--lengths" in args))
        else:
            engines.append(real_make(backend, path, tok, model=model, **kw))
        return engines[-1]

    def micro_batches(lengths, max_tokens):
        groups = real_mb(lengths, max_tokens)
        with open(os.path.join(out_dir, f"micro_batches_rank{os.environ.get('RANK', '0')}.txt"), "a") as f:
            f.write(f"{len(groups)}\n")
        return groups

    rollout.make_engine, train_sod.micro_batches = make_engine, micro_batches
    if "--sgd" in args:
        torch.optim.AdamW = lambda params, lr, **kw: torch.optim.SGD(params, lr=lr)
    return engines


if __name__ == "__main__":
    i = sys.argv.index("--")
    flags, argv = sys.argv[1:i], sys.argv[i + 1:]
    out_dir = argv[argv.index("--out_dir") + 1]
    engines = install(flags, out_dir)
    import train_sod
    train_sod.main(argv)
    if "--dump_engine" in flags:
        torch.save(engines[0].model.state_dict(), os.path.join(out_dir, f"engine_rank{os.environ.get('RANK', '0')}.pt"))
    import common
    common.exit_process()  # as train_sod.py ends: no gloo thread meets interpreter finalization
