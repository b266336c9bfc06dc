"""Runs train_sod.main with a scripted rollout engine, under `python` or `torchrun` (tests/test_sod.py).

    python tests/sod_worker.py --scripted -- --out_dir OUT --max_steps 2 ...     (everything after -- is train_sod's)

The scripted engine makes every episode call the tool once (`print(2 + 3)`) and then answer 5 or 6 (a coin flip from
torch's global RNG, so resume must restore it), and reports the true log-probs of what it emits under its own copy of
the student, so the train-vs-sampler mismatch must be ~0.
"""
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TURN_1 = ('<think>\nI use the tool.\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
          '{"code": "print(2 + 3)"}}\n</tool_call><|im_end|>')
TURN_2 = "<think>\nIt printed it.\n</think>\n\nThe answer is \\boxed{%d}.<|im_end|>"


class ScriptedEngine:
    def __init__(self, model, tok):
        self.model, self.tok = copy.deepcopy(model).eval(), tok
        self.calls = 0

    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0):
        self.calls += 1
        out = []
        for p in prompts:
            first = self.tok.decode(p).count("<tool_response>") == 0
            text = TURN_1 if first else TURN_2 % int(5 + torch.randint(0, 2, ()).item())
            new = self.tok.encode(text, add_special_tokens=False)[:max_new_tokens]
            with torch.no_grad():
                logits = self.model(torch.tensor([p + new])).logits[0, len(p) - 1:-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
            out.append((new, lp.tolist(), "stop" if new[-1] == self.tok.convert_tokens_to_ids("<|im_end|>")
                        else "length"))
        return out

    def update_weights(self, named_tensors):
        self.model.load_state_dict(dict(named_tensors))

    def sleep(self):
        pass

    def wake_up(self):
        pass


def install():
    import rollout
    rollout.make_engine = lambda backend, path, tok, model=None, **kw: ScriptedEngine(model, tok)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "--scripted":
        install()
        argv = argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    import train_sod
    train_sod.main(argv)
