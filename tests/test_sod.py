"""train_sod.py: data order, micro-batching, log-probs through FSDP2, and whole toy steps (1 and 2 processes)."""
import contextlib
import dataclasses
import importlib
import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import common
import train_sod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_batch_problems_walks_epochs_without_repeats():
    probs = list(range(10))
    seen = [train_sod.batch_problems(probs, step, 4, seed=3) for step in range(1, 6)]  # 20 draws = 2 epochs
    flat = [x for b in seen for x in b]
    assert sorted(flat[:10]) == probs and sorted(flat[10:20]) == probs  # each epoch is a permutation
    assert flat[:10] != flat[10:20]  # reshuffled per epoch
    assert seen == [train_sod.batch_problems(probs, step, 4, seed=3) for step in range(1, 6)]  # pure: resumable
    assert train_sod.batch_problems(probs, 1, 4, seed=4) != seen[0]


def test_micro_batches_fit_budget_and_cover_everything():
    lengths = [5, 30, 7, 7, 12, 50, 1, 3]
    groups = train_sod.micro_batches(lengths, 40)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 40
    assert [5] in groups  # the 50-token sequence alone (over budget, still one group)
    # longest first, a group closed only when the next sequence would not fit (by hand: 4 | 3 -> 2 x 4 = 8 fits the
    # budget exactly | 2 -> 3 x 4 = 12 does not | 1 -> 2 x 2 = 4)
    assert train_sod.micro_batches([1, 2, 3, 4], 8) == [[3, 2], [1, 0]]


def test_sequence_logprobs_match_full_logits_under_fsdp():
    import common
    import models
    dist = common.init_dist("cpu")
    try:
        tok = models.make_toy_tokenizer()
        ref = models.tiny_qwen3(tok, "tiny", seed=1)
        model = common.wrap_fsdp(models.tiny_qwen3(tok, "tiny", seed=1), dist)
        ids = torch.randint(3, len(tok), (3, 17))
        attn = torch.ones_like(ids)
        attn[1, 11:] = 0  # right padding
        lp = train_sod.sequence_logprobs(model, ids, attn, chunk=5)
        logits = ref(input_ids=ids, attention_mask=attn).logits.float()
        want = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        assert lp.shape == (3, 16)
        assert torch.allclose(lp[0], want[0], atol=1e-5) and torch.allclose(lp[1, :10], want[1, :10], atol=1e-5)
        (lp[0].sum() + lp[1, :10].sum()).backward()  # gradients reach the sharded params, root ones included
        (want[0].sum() + want[1, :10].sum()).backward()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad  # one CPU process: not sharded
            assert torch.allclose(g, q.grad, atol=1e-5), name
    finally:
        common.destroy_dist()


@pytest.mark.parametrize("script", ["train_sod", "train_sft"])
def test_every_config_key_passes_through_torchrun(script):
    # torchrun's argparse resolves abbreviations of its own options anywhere on the line: a key that is the prefix
    # of several of them (--n: --nnodes, --nproc-per-node, --node-rank, ...) aborts the launch before the script runs
    from torch.distributed.run import get_args_parser
    for f in dataclasses.fields(importlib.import_module(script).Config):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                args = get_args_parser().parse_args(["--nproc_per_node=2", f"{script}.py", f"--{f.name}", "1"])
            except SystemExit:
                raise AssertionError(f"{script} --{f.name}: {err.getvalue().strip().splitlines()[-1]}") from None
        assert args.training_script_args == [f"--{f.name}", "1"], f.name


@pytest.mark.parametrize("name", ["qwen3_0.6b", "qwen3_1.7b", "toy"])
def test_configs_parse(name):
    cfg = common.parse_config(train_sod.Config, ["--config", os.path.join(ROOT, "configs", f"{name}.py")])
    assert cfg.group_size in (4, 16) and cfg.prompts_per_step % cfg.mini_batch_prompts == 0
    if name != "toy":  # the original recipe: one epoch, every 10 steps a checkpoint, the last 3 kept
        assert (cfg.epochs, cfg.max_steps, cfg.save_every, cfg.keep_last) == (1, 0, 10, 3)



def test_collective_timeout_covers_the_protocols_worst_case():
    paper = common.parse_config(train_sod.Config, ["--config", os.path.join(ROOT, "configs", "qwen3_0.6b.py")])
    # 15 turns of a 60 s call, 20,480 decode steps of 50 ms, 128 code episodes graded in 2 rounds of 30 s, + 10 min
    assert train_sod.collective_timeout(paper, 8) == 15 * 60 + 20480 * 0.05 + 128 * 60 + 600
    assert train_sod.collective_timeout(dataclasses.replace(paper, sandbox_url="http://sandbox:8080"), 8) == \
        15 * 90 + 20480 * 0.05 + 128 * 60 + 600
    toy = common.parse_config(train_sod.Config, ["--config", os.path.join(ROOT, "configs", "toy.py")])
    assert train_sod.collective_timeout(toy, 1) == 1800  # nothing to grade in a sandbox: the 30-minute floor

# -----------------------------------------------------------------------------
# Whole toy steps through train_sod.main (a subprocess each: the script owns its process group)

WORKER = os.path.join(ROOT, "tests", "sod_worker.py")
TOY = ["--student", "toy:tiny", "--teacher", "toy:toy_student", "--data", "toy", "--val_bench", "",
       "--prompts_per_step", "2", "--group_size", "2", "--mini_batch_prompts", "1", "--max_turns", "3",
       "--max_response_len", "96", "--max_prompt_len", "4096", "--lr", "1e-3", "--save_every", "1",
       "--dump_every", "1", "--micro_batch_tokens", "4096", "--tool_timeout", "5", "--overlong_buffer", "16"]


def run_sod(out, *extra, nproc=1, flags=("--scripted",), check=True):
    args = [WORKER, *flags, "--", "--out_dir", str(out), *TOY, *extra]
    cmd = [sys.executable, *args] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=400)
    if not check:
        return r
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))], r.stdout


def load_weights(path):
    from safetensors.torch import load_file
    return load_file(os.path.join(path, "model.safetensors"))


def test_toy_steps_with_tool_calls_and_eval_after_update(tmp_path):
    # eval at every step: step 2 samples right after a weight push, which (as in vLLM) woke the weights only; the
    # scripted engine refuses to sample while its KV cache sleeps, so this fails unless the loop wakes it fully
    rows, log = run_sod(tmp_path, "--max_steps", "2", "--val_bench", "toy", "--val_limit", "2", "--val_k", "1",
                        "--eval_every", "1")
    assert [r["step"] for r in rows] == [1, 2] and all("val/acc" in r for r in rows)
    for r in rows:  # the script: one successful tool call, then an answer
        assert r["tool_calls"] == 1.0 and r["tool_error_rate"] == 0.0 and r["turns"] == 2.0
        assert -1.0 <= r["reward"] <= 1.0 and 0.0 <= r["acc"] <= 1.0
        assert 0.0 < r["w_mean"] <= 1.2 and 0.0 <= r["w_lt_half"] <= 1.0 and r["d_mean"] > 0.0
    assert rows[0]["mismatch"] < 1e-4  # the sampler's log-probs are the trainer's: ids and masks line up
    assert rows[1]["mismatch"] < 1e-4  # the engine got the updated weights
    assert "step     2 | reward" in log and "scripted engine: model path toy:tiny" in log
    html = open(tmp_path / "samples" / "step_000002.html").read()
    assert "step 1: d=" in html and "step 2: d=" in html and "&lt;tool_response&gt;" in html
    sample = json.loads(open(tmp_path / "samples" / "step_000002.jsonl").readline())
    assert sample["turns"][0]["calls"] == [{"name": "code_interpreter", "arguments": {"code": "print(2 + 3)"}}]
    assert sample["turns"][0]["observations"] == ["5"] and len(sample["w"]) == 2 and sample["w"][0] == 1.0
    a, b = load_weights(tmp_path / "step_000001" / "model"), load_weights(tmp_path / "step_000002" / "model")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the update moved weights


def test_resume_reproduces_next_step_from_a_run_directory(tmp_path):
    full, _ = run_sod(tmp_path / "full", "--max_steps", "2")
    run_sod(tmp_path / "split", "--max_steps", "1")
    split, log = run_sod(tmp_path / "split", "--max_steps", "2", "--resume")
    assert "resume:" in log
    assert [r["step"] for r in split] == [1, 2]
    for k in ("loss", "reward", "clip_frac", "w_mean", "d_mean"):
        assert split[1][k] == full[1][k], k
    # step 2's prompts and sampled episodes (data cursor, torch RNG) and its two AdamW updates (moments two updates
    # in, lr 1e-3) are the uninterrupted run's, to the last bit
    samples = [open(tmp_path / run / "samples" / "step_000002.jsonl").read() for run in ("full", "split")]
    assert samples[0] == samples[1]
    a, b = (load_weights(tmp_path / run / "step_000002" / "model") for run in ("full", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a run directory as the student: the engine is handed its latest checkpoint's model directory
    _, log = run_sod(tmp_path / "from_run", "--max_steps", "1", "--student", str(tmp_path / "full"))
    assert f"scripted engine: model path {tmp_path / 'full' / 'step_000002' / 'model'}\n" in log


def test_grpo_never_loads_the_teacher(tmp_path):
    rows, log = run_sod(tmp_path, "--max_steps", "1", "--algo", "grpo", "--teacher", "/nonexistent/teacher")
    assert rows[0]["d_mean"] == 0.0 and rows[0]["w_mean"] == 1.0  # no teacher: τ = s


def test_two_processes_unequal_micro_batches_equal_one_process(tmp_path):
    # episodes of different lengths (a pure function of the prompt) and micro-batches of ~2 episodes: the ranks
    # build different numbers of micro-batches for scoring and for the update, which without padding to equal
    # counts hangs (or mixes layers) in the FSDP2 collectives. One optimizer step over the whole global batch
    # (mini_batch_prompts = prompts_per_step), SGD so the update is linear in the gradient.
    # (seed 2: a batch whose halves pack into different numbers of micro-batches; the first assert checks it still
    # does whenever the toy's problems change)
    step = ["--max_steps", "1", "--prompts_per_step", "4", "--mini_batch_prompts", "4", "--micro_batch_tokens", "400",
            "--seed", "2", "--max_response_len", "400", "--lr", "1.0"]
    one, _ = run_sod(tmp_path / "one", *step, flags=("--lengths", "--sgd"))
    two, log = run_sod(tmp_path / "two", *step, nproc=2, flags=("--lengths", "--sgd"))
    counts = [open(tmp_path / "two" / f"micro_batches_rank{r}.txt").read().split() for r in (0, 1)]
    assert len(counts[0]) == len(counts[1]) == 2 and counts[0] != counts[1]  # scoring, update: the ranks differ
    # the same global batch, summed in another order and split over ranks: fp32 rounding only, ~1e-7 relative;
    # a lost or doubled micro-batch or a mixed-up layer moves the loss and the weights by ~1e-2 or more
    assert abs(one[0]["reward"] - two[0]["reward"]) < 1e-6 and abs(one[0]["loss"] - two[0]["loss"]) < 1e-5
    a, b = load_weights(tmp_path / "one" / "step_000001" / "model"), load_weights(tmp_path / "two" / "step_000001" /
                                                                                    "model")
    init = data_tiny_state()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-2  # the step moved the weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def data_tiny_state():
    import models
    return models.tiny_qwen3(models.make_toy_tokenizer(), "tiny").state_dict()


def test_two_processes_real_engine_every_rank_gets_the_weights(tmp_path):
    rows, log = run_sod(tmp_path, "--max_steps", "2", "--max_response_len", "24", "--mini_batch_prompts", "2",
                        nproc=2, flags=("--dump_engine",))
    assert "dist: world 2" in log and [r["step"] for r in rows] == [1, 2]
    trained = load_weights(tmp_path / "step_000002" / "model")
    for rank in (0, 1):  # after the last push, each rank's engine holds exactly the trainer's weights
        engine = torch.load(tmp_path / f"engine_rank{rank}.pt")
        assert engine.keys() == trained.keys() | {"lm_head.weight"}  # tied: saved once, held twice
        assert all(torch.equal(engine[k], trained[k]) for k in trained), rank
    # step 2 samples with the weights pushed after step 1, on both ranks: max over ranks, and each rank
    assert rows[1]["mismatch"] < 1e-4 and len(rows[1]["mismatch_ranks"]) == 2


def test_two_processes_a_long_episode_ends_as_length_on_vllm(tmp_path):
    # the vLLM stand-in, 2 processes. Prompts are filtered by their length without the tool schema (the original's
    # filter) but rolled out with it (+~80 tokens here, +148 with Qwen3's template); on rank 1 every episode's first
    # turn thinks until its tool call and result leave 9 tokens of the response budget. vLLM's max_model_len must
    # hold the longest prompt as rolled out plus max_response_len, or a turn overruns it: vLLM raises on that rank
    # alone (a prompt of >= max_model_len tokens), or cuts a turn short without the episode counting as overlong
    rows, log = run_sod(tmp_path, "--max_steps", "1", "--max_prompt_len", "60", "--max_response_len", "160",
                        "--mini_batch_prompts", "2", nproc=2, flags=("--fake_vllm",))
    assert "(0 dropped as longer than 60)" in log  # 60 is above every toy prompt as the filter measures it
    eps = [[json.loads(line) for line in open(tmp_path / f"episodes_rank{r}.jsonl")] for r in (0, 1)]
    # as rolled out, every prompt is well over the filter's 60: max_prompt_len + max_response_len would not hold it
    assert len(eps[0]) == len(eps[1]) == 2 and min(e["prompt_len"] for e in eps[0] + eps[1]) > 100
    assert all(e["finish"] == "answer" and not e["overlong"] for e in eps[0])
    assert all(e["finish"] == "length" and e["overlong"] and e["response_len"] == 160 for e in eps[1]), eps[1]
    assert rows[0]["overlong"] == 0.5


def test_a_failure_on_one_rank_ends_every_rank_with_its_traceback(tmp_path):
    # rank 1's engine raises at its first turn while rank 0 rolls out: rank 0 must not wait for it in the next
    # collective (up to the process-group timeout when the failed process lingers: multi-node, NCCL teardown)
    r = run_sod(tmp_path, "--max_steps", "2", "--mini_batch_prompts", "2", nproc=2,
                flags=("--scripted", "--fail_rank=1"), check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and time.time() - float(open(tmp_path / "failed_at").read()) < 60, out[-3000:]
    assert "[rank 1] rollout failed:" in out and 'raise RuntimeError("injected")' in out, out[-3000:]
    assert "rank(s) [1] failed in rollout; stopping" in out, out[-3000:]
