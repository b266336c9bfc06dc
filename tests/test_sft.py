"""train_sft.py: assistant-only loss mask, packing isolation, 1-vs-2 processes, resume, a short toy run."""
import json
import os
import shutil
import subprocess
import sys

import torch

import data
import train_sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def expected_assistant_text(m):
    """An assistant turn as Qwen3 writes it, spelled out by hand from the message (independent of the template)."""
    text = f"<think>\n{m.get('reasoning_content', '')}\n</think>\n\n{m['content']}"
    for i, tc in enumerate(m.get("tool_calls") or []):
        f = tc["function"]
        text += ("\n" if m["content"] or i else "") + \
            f'<tool_call>\n{{"name": "{f["name"]}", "arguments": {json.dumps(f["arguments"])}}}\n</tool_call>'
    return text + "<|im_end|>"


def spans(mask):
    out, start = [], None
    for i, v in enumerate(mask + [0]):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i))
            start = None
    return out


def test_loss_mask_is_exactly_the_assistant_turns():
    tok = data.make_toy_tokenizer()
    for conv in data.toy_sft_conversations(12, seed=3):
        ids, mask = train_sft.tokenize_conversation(tok, conv["messages"], conv["tools"])
        assistant = [m for m in conv["messages"] if m["role"] == "assistant"]
        got = [tok.decode(ids[a:b]) for a, b in spans(mask)]
        assert got == [expected_assistant_text(m) for m in assistant]
        # everything else (system + tools block, user, tool responses, headers) is context
        rest = tok.decode([t for t, k in zip(ids, mask) if not k])
        assert rest.count("<tool_response>") == sum(m["role"] == "tool" for m in conv["messages"])
        assert "The answer is" not in rest and '"arguments": {"code"' not in rest


def test_packed_logits_equal_alone():
    tok = data.make_toy_tokenizer()
    model = data.tiny_qwen3(tok, "tiny", seed=2).eval()
    docs = [train_sft.tokenize_conversation(tok, c["messages"], c["tools"])
            for c in data.toy_sft_conversations(3, seed=5)]
    ids, labels, pos, attn = train_sft.collate([docs])
    assert ids.shape[0] == 1
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, attention_mask=attn).logits[0]
        t = 0
        for d_ids, d_mask in docs:
            alone = model(input_ids=torch.tensor([d_ids])).logits[0]
            assert torch.allclose(packed[t:t + len(d_ids)], alone, atol=1e-4)
            # labels are the next tokens exactly where the next token is trained
            lab = labels[0, t:t + len(d_ids)]
            want = [d_ids[i + 1] if i + 1 < len(d_ids) and d_mask[i + 1] else -100 for i in range(len(d_ids))]
            assert lab.tolist() == want
            t += len(d_ids)


def test_pack_and_pad_groups_respect_budget_and_order():
    docs = [([0] * n, [0] * n) for n in (5, 3, 4, 9, 1)]
    assert [[len(d[0]) for d in r] for r in train_sft.pack(docs, 8)] == [[5, 3], [4], [9], [1]]
    assert [[len(d[0]) for d in g] for g in train_sft.pad_groups(docs, 10)] == [[5, 3], [4], [9], [1]]
    assert [[len(d[0]) for d in g] for g in train_sft.pad_groups(docs, 15)] == [[5, 3, 4], [9], [1]]


def test_padded_rows_mask_out_padding():
    docs = [([5, 6, 7], [0, 1, 1]), ([8, 9], [0, 1])]
    ids, labels, pos, attn = train_sft.collate([[d] for d in docs])
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]] and labels.tolist() == [[6, 7, -100], [9, -100, -100]]
    assert attn[1, 0, 1].tolist() == [True, True, False] and attn[1, 0, 2].tolist() == [False, False, True]


def run(out, *extra, nproc=1):
    args = [os.path.join(ROOT, "train_sft.py"), "--out_dir", str(out), "--model", "toy:tiny", "--data", "toy",
            "--toy_n", "64", "--batch_size", "8", "--micro_batch_tokens", "1024", "--lr", "1e-2",
            "--max_length", "1024", *extra]
    cmd = [sys.executable, *args] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def test_toy_sft_learns_loads_resumes_and_matches_two_processes(tmp_path):
    from transformers import AutoModelForCausalLM
    full = run(tmp_path / "full", "--max_steps", "8", "--save_every", "4")
    assert full[-1]["loss"] < 0.8 * full[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "step_000008" / "model")
    assert model.config.num_hidden_layers == 2
    # a run that stopped after its step-4 checkpoint resumes into the same next losses
    split = tmp_path / "split"
    shutil.copytree(tmp_path / "full" / "step_000004", split / "step_000004")
    resumed = run(split, "--max_steps", "8", "--save_every", "4", "--resume")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[4:]]
    # two processes (packing each rank's half of the batch) take the same steps
    two = run(tmp_path / "two", "--max_steps", "2", nproc=2)
    assert all(abs(a["loss"] - b["loss"]) < 1e-4 for a, b in zip(two, full[:2]))
