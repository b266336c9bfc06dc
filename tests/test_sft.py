"""train_sft.py: assistant-only loss mask, packing (isolation, budget, loss), 1 vs 2 processes, resume, a toy run, and
what its checkpoint computes."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import models
import tools
import toy
import train_sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tok():
    return models.make_toy_tokenizer()


def hand_conversation():
    """System prompt, text + two tool calls in one turn (arguments as a JSON string), two tool results, an answer."""
    call = lambda code: {"type": "function", "function": {"name": "code_interpreter",
                                                          "arguments": json.dumps({"code": code})}}
    return [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 12 * 34 + 5?"},
            {"role": "assistant", "content": "Two calls.", "reasoning_content": "Multiply, then add.",
             "tool_calls": [call("print(12 * 34)"), call("print(408 + 5)")]},
            {"role": "tool", "content": "408"},
            {"role": "tool", "content": "413"},
            {"role": "assistant", "content": "\\boxed{413}", "reasoning_content": "Done."}]


def assistant_text(m):
    """One assistant turn as Qwen3 writes it (thinking on, a single user query), spelled out from the message."""
    text = f"<think>\n{m.get('reasoning_content', '')}\n</think>\n\n{m['content']}"
    for i, tc in enumerate(m.get("tool_calls") or []):
        args = tc["function"]["arguments"]
        args = args if isinstance(args, str) else json.dumps(args)
        text += ("\n" if m["content"] or i else "") + \
            f'<tool_call>\n{{"name": "{tc["function"]["name"]}", "arguments": {args}}}\n</tool_call>'
    return text + "<|im_end|>"


def runs_of_ones(mask):
    out, start = [], None
    for i, v in enumerate(list(mask) + [0]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def test_loss_mask_is_exactly_the_assistant_turns(tok):
    convs = [c["messages"] for c in toy.toy_sft_conversations(12, seed=3)] + [hand_conversation()]
    for msgs in convs:
        ids, mask = train_sft.tokenize_conversation(tok, msgs, tools.TOOLS)
        assert ids == tok.apply_chat_template(msgs, tools=tools.TOOLS, tokenize=True, return_dict=False)
        trained = [tok.decode(ids[a:b]) for a, b in runs_of_ones(mask)]
        assert trained == [assistant_text(m) for m in msgs if m["role"] == "assistant"]
        # the context around them: each trained run is preceded by exactly the assistant header and followed by "\n"
        for a, b in runs_of_ones(mask):
            assert tok.decode(ids[a - 3:a]) == "<|im_start|>assistant\n" and tok.decode(ids[b:b + 1]) == "\n"
        context = tok.decode([t for t, k in zip(ids, mask) if not k])
        assert context.count("<tool_response>") == sum(m["role"] == "tool" for m in msgs)
        for m in msgs:  # no assistant text or code leaks into the context
            if m["role"] == "assistant":
                assert not m["content"] or m["content"] not in context
                assert all(json.dumps(tc["function"]["arguments"]).strip('"')[:20] not in context
                           for tc in m.get("tool_calls") or [])


def test_template_that_rewrites_earlier_turns_is_refused(tok):
    # a second user query makes the template drop the reasoning of the first query's turns, which the render up to
    # the first query's second turn still shows: that prefix is not stable, so there is no mask to derive
    first = toy.toy_sft_conversations(1, seed=0)[0]["messages"][:3]  # user, assistant (reasoning + call), tool
    msgs = first + [{"role": "assistant", "content": "2", "reasoning_content": "Easy."},
                    {"role": "user", "content": "2 + 2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Easy too."}]
    with pytest.raises(ValueError, match="re-renders"):
        train_sft.tokenize_conversation(tok, msgs, tools.TOOLS)


def test_pack_first_fit_decreasing_and_pad_groups():
    docs = [([i] * n, [1] * n) for i, n in enumerate((5, 3, 4, 9, 1))]
    rows = train_sft.pack(docs, 10)
    assert [[len(d[0]) for d in r] for r in rows] == [[9, 1], [5, 4], [3]]  # by hand: 9|5 4|3, then 1 fits row 0
    assert sorted(d[0][0] for r in rows for d in r) == [0, 1, 2, 3, 4]
    assert [[len(d[0]) for d in g] for g in train_sft.pad_groups(docs, 10)] == [[5, 3], [4], [9], [1]]
    assert [[len(d[0]) for d in g] for g in train_sft.pad_groups(docs, 15)] == [[5, 3, 4], [9], [1]]


def test_lr_warmup_then_cosine():
    cfg = train_sft.Config(lr=1.0, warmup_ratio=0.1, min_lr_ratio=0.2)
    got = [train_sft.lr_at(s, 21, cfg) for s in (1, 2, 12, 21)]  # warmup = 2 steps, then 19 steps of cosine
    assert got == pytest.approx([0.5, 1.0, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 10 / 19)), 0.2])


def toy_docs(tok, n, seed):
    return [train_sft.tokenize_conversation(tok, c["messages"], c["tools"])
            for c in toy.toy_sft_conversations(n, seed)]


def test_packed_and_padded_logits_equal_alone(tok):
    docs = toy_docs(tok, 3, seed=5)
    ref = models.tiny_qwen3(tok, "tiny", seed=2).eval()  # plain SDPA, each doc on its own
    model = models.tiny_qwen3(tok, "tiny", seed=2).eval()
    train_sft.set_attention(model, torch.device("cpu"))
    with torch.no_grad():
        alone = [ref(input_ids=torch.tensor([d[0]])).logits[0] for d in docs]
        ids, _, _, pos = train_sft.collate([docs])  # one packed row
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        ids, _, _, pos = train_sft.collate([[d] for d in docs])  # one padded row each
        padded = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    t = 0
    for i, d in enumerate(docs):
        n = len(d[0])
        assert torch.allclose(packed[t:t + n], alone[i], atol=1e-5)
        assert torch.allclose(padded[i, :n], alone[i], atol=1e-5)
        t += n


def test_batch_nll_is_the_summed_assistant_nll(tok):
    docs = toy_docs(tok, 4, seed=6)
    model = models.tiny_qwen3(tok, "tiny", seed=3)
    want = 0.0
    with torch.no_grad():  # reference: each doc alone, full logits, targets t+1 where the mask is 1
        for d_ids, d_mask in docs:
            logp = torch.log_softmax(model(input_ids=torch.tensor([d_ids])).logits[0].double(), -1)
            want -= sum(logp[t - 1, d_ids[t]].item() for t in range(1, len(d_ids)) if d_mask[t])
    train_sft.set_attention(model, torch.device("cpu"))
    with torch.no_grad():
        for packing in (True, False):
            mbs = train_sft.micro_batches(docs, 1024, packing)
            got = sum(train_sft.batch_nll(model, rows, torch.device("cpu"), chunk=64).item() for rows in mbs)
            assert abs(got - want) < 1e-3 * abs(want)


def run(out, *extra, nproc=1):
    args = [os.path.join(ROOT, "train_sft.py"), "--out_dir", str(out), "--model", "toy:tiny", "--data", "toy",
            "--toy_n", "64", "--batch_size", "8", "--micro_batch_tokens", "1200", "--max_length", "1024",
            "--lr", "1e-2", "--warmup_ratio", "0", "--min_lr_ratio", "1", *extra]  # constant lr
    cmd = [sys.executable, *args] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def weights(run_dir, step):
    return load_file(os.path.join(run_dir, f"step_{step:06d}", "model", "model.safetensors"))


def test_toy_sft_learns_resumes_and_matches_two_processes(tmp_path):
    full = run(tmp_path / "full", "--max_steps", "8", "--save_every", "2")
    assert [r["step"] for r in full] == list(range(1, 9))
    assert full[-1]["loss"] < 0.7 * full[0]["loss"]
    # a run stopped after its step-4 checkpoint resumes into exactly the same losses
    shutil.copytree(tmp_path / "full" / "step_000004", tmp_path / "split" / "step_000004")
    resumed = run(tmp_path / "split", "--max_steps", "8", "--save_every", "2", "--resume")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[4:]]
    # two gloo processes, each running every other micro-batch, take the same two steps; with an odd count one rank
    # also runs an empty micro-batch so that both issue the same FSDP collectives
    assert full[0]["micro_batches"] % 2 == 1
    two = run(tmp_path / "two", "--max_steps", "2", "--save_every", "2", nproc=2)
    assert all(abs(a["loss"] - b["loss"]) < 1e-5 for a, b in zip(two, full[:2]))
    a, b = weights(tmp_path / "full", 2), weights(tmp_path / "two", 2)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_checkpoint_computes_what_the_trainer_computed(tmp_path, monkeypatch):
    # train_sft.main in this process; at each save, the logits of the trainer's own model (FSDP2, per-conversation
    # attention, trained weights) on a fixed input are recorded; the saved directory, loaded as a plain Hugging Face
    # model in a fresh process (default attention, no FSDP), must compute the same logits
    import common
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    for k in keys:
        monkeypatch.delenv(k, raising=False)
    x = torch.randint(3, 500, (2, 20))  # ids of the toy vocabulary
    seen = {}
    real_save = common.save_checkpoint

    def spy(out_dir, step, model, *a, **k):
        with torch.no_grad():
            seen[step] = model(input_ids=x, position_ids=torch.arange(20).repeat(2, 1), use_cache=False).logits
        return real_save(out_dir, step, model, *a, **k)
    monkeypatch.setattr(common, "save_checkpoint", spy)
    try:
        train_sft.main(["--out_dir", str(tmp_path), "--model", "toy:tiny", "--data", "toy", "--toy_n", "16",
                        "--batch_size", "8", "--micro_batch_tokens", "1200", "--max_length", "1024", "--lr", "1e-2",
                        "--warmup_ratio", "0", "--min_lr_ratio", "1", "--max_steps", "2", "--save_every", "1"])
    finally:
        for k in keys:
            os.environ.pop(k, None)
    assert sorted(seen) == [1, 2] and not torch.allclose(seen[1], seen[2], atol=1e-3)  # the step moved the model
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; from transformers import AutoModelForCausalLM; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
            "torch.save(m(input_ids=torch.load(sys.argv[2])).logits.detach(), sys.argv[3])")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "step_000002" / "model"), str(tmp_path / "x.pt"),
                        str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.allclose(torch.load(tmp_path / "y.pt"), seen[2], atol=1e-5)
