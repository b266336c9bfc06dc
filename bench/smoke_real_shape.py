"""Smoke run at real scale on CPU: the Qwen3-0.6B shape (random weights) with Qwen3's real tokenizer through every
real code path, each phase in its own process, with its wall time and peak resident memory.

    python bench/smoke_real_shape.py                # 6-7 min on 2 idle cores, 12.2 GiB peak
    python bench/smoke_real_shape.py --shape tiny   # the same paths at a tiny size, ~1 min

Phases: `init` writes the base model as real checkpoints come (bf16 on disk, with the tokenizer); `ledger`
measures what the SOD step holds besides the student (the HF engine's copy, none in one process; the teacher as it
comes and in fp32; a forward + backward through wrap_fsdp in a world of one, which leaves the module plain);
`sft` runs train_sft.py for 2 steps on toy conversations rendered by the real template; `sod`
runs train_sod.py for 1 step (2 prompts x 2 rollouts, tool calls run in the sandbox, the base model as a teacher of
the same shape); `eval` runs eval.py on 2 toy problems; `reload` loads both checkpoints with plain `transformers`
and compares their logits with those of the weights the trainer held, and their dtype with the base model's.
A model with random weights never writes a tool call, so each episode's first assistant turn is a scripted call
(teacher-forced, sampler log-prob 0); every later turn is sampled by the real engine. The last line is a summary.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROBE = "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n<|im_start|>assistant\n<think>\nLet me compute"
CALL = ('<think>\nI compute it with code.\n</think>\n\n<tool_call>\n{"name": "code_interpreter", "arguments": '
        '{"code": "print(6 * 7)"}}\n</tool_call><|im_end|>')
GIB = 2**30

# -----------------------------------------------------------------------------
# Helpers run inside the phases


class Peak:
    """Peak resident memory of this process between start and stop (polled every 10 ms)."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.run = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.run:
            self.peak = max(self.peak, rss())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.run = False
        self.thread.join()
        self.peak = max(self.peak, rss())


def hwm():
    """The peak resident memory of this process so far (the kernel's high-water mark)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class FirstTurnCalls:
    """The real engine, except that each episode's first assistant turn is the scripted tool call (returned by the
    next poll, whole, with stop finish)."""

    def __init__(self, engine, tok):
        self.engine, self.call, self.head = engine, tok.encode(CALL), tok.encode("<|im_start|>assistant")
        self.scripted = []

    def first(self, ids):
        h = self.head
        return sum(ids[i:i + len(h)] == h for i in range(len(ids))) == 1

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        if self.first(ids):
            self.scripted.append((key, self.call, [0.0] * len(self.call), "stop"))
        else:
            self.engine.submit(key, ids, max_new_tokens, temperature, top_p, seed)

    def poll(self):
        done, self.scripted = self.scripted, []
        return done + self.engine.poll()

    def update_weights(self, named_tensors):
        return self.engine.update_weights(named_tensors)

    def __getattr__(self, name):  # sleep, wake_up: the real engine's
        return getattr(self.engine, name)


def script_first_turns():
    import rollout
    make = rollout.make_engine
    rollout.make_engine = lambda backend, path, tok, *a, **kw: FirstTurnCalls(make(backend, path, tok, *a, **kw), tok)


MARKS = {}  # event -> the process's peak resident memory when it happened (monotonic: shows where the peak was)


def mark_before(module, name, label):
    fn = getattr(module, name)

    def wrapped(*a, **kw):
        MARKS.setdefault(label, round(hwm() / GIB, 1))
        return fn(*a, **kw)
    setattr(module, name, wrapped)


def mark_sod_phases():
    import sod_loss
    import train_sod
    mark_before(train_sod, "score", "peak through rollouts")
    mark_before(sod_loss, "sod_advantages", "peak through scoring")
    mark_before(FirstTurnCalls, "update_weights", "peak through update")


def record_checkpoints():
    """After each checkpoint, store the probe's logits of the weights the trainer held, rounded to fp32 and to bf16 in
    a plain model of that dtype: what a reload must reproduce exactly in the dtype the checkpoint has on disk."""
    import torch
    from transformers import AutoModelForCausalLM

    import common
    save = common.save_checkpoint

    def wrapped(out_dir, step, model, tokenizer, optimizer, cfg, state, **kw):
        train_peak = hwm()  # the run's peak so far: training, before the checkpoint
        final = save(out_dir, step, model, tokenizer, optimizer, cfg, state, **kw)
        with open(os.path.join(out_dir, "peaks.json"), "w") as f:
            json.dump({**MARKS, "peak before save": round(train_peak / GIB, 1),
                       "peak with save": round(hwm() / GIB, 1)}, f)
        held, probe, ref = common.full_state_dict(model), torch.tensor([tokenizer.encode(PROBE)]), {}
        for dt in (torch.float32, torch.bfloat16):  # built in `dt` as from_pretrained builds it (fp32 rotary buffers)
            plain = AutoModelForCausalLM.from_config(model.config, dtype=dt)
            plain.load_state_dict({k: v.to(dt) for k, v in held.items()})
            with torch.no_grad():
                ref[str(dt)] = plain(input_ids=probe, use_cache=False).logits.float()
        torch.save(ref, os.path.join(final, "smoke_reference_logits.pt"))
        return final

    common.save_checkpoint = wrapped


def say(d, phase, **facts):
    print(f"{phase}: " + json.dumps(facts), flush=True)
    with open(os.path.join(d, "facts.jsonl"), "a") as f:
        f.write(json.dumps({"phase": phase, **facts}) + "\n")

# -----------------------------------------------------------------------------
# Phases


def phase_init(d, shape):
    import torch

    import models
    model, tok = models.load_model(f"shape:{shape}", dtype=torch.bfloat16)  # as real checkpoints come
    model.save_pretrained(os.path.join(d, "base"))
    tok.save_pretrained(os.path.join(d, "base"))
    say(d, "init", params=sum(p.numel() for p in model.parameters()), tokenizer=len(tok),
        embedding_rows=model.get_input_embeddings().weight.shape[0], dtype=str(model.dtype))


def phase_ledger(d, shape):
    """What the SOD step holds besides the student and its optimizer state: the bytes of each copy of the weights
    (the HF engine's own copy when the student is sharded, none in one CPU process where it shares the student's
    parameters; the teacher as it comes and in fp32), and the peak resident memory of one forward + backward of the
    plain module and of what wrap_fsdp returns in this world of one."""
    import torch

    import common
    import models
    import rollout
    dist = common.init_dist()
    base = os.path.join(d, "base")
    student, tok = models.load_model(base)
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
    shared = rollout.HFEngine(student, tok, share=True).model
    held = {"student_fp32": nbytes(student), "engine_copy_sharded": nbytes(rollout.HFEngine(student, tok).model),
            "engine_copy_one_process": 0 if shared is student else nbytes(shared),
            "teacher_fp32": nbytes(models.load_model(base)[0]),
            "teacher_as_it_comes": nbytes(models.load_model(base, dtype="auto")[0])}
    ids = torch.tensor([tok.encode(PROBE * 16)])

    def fwd_bwd(model):
        with Peak() as p:
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)
        return p.peak - p.base

    held["fwd_bwd_plain_peak"] = fwd_bwd(student)
    held["fwd_bwd_wrap_fsdp_one_process_peak"] = fwd_bwd(common.wrap_fsdp(student, dist))
    say(d, "ledger", tokens=ids.shape[1], **{k + "_gib": round(v / GIB, 2) for k, v in held.items()})
    common.destroy_dist()


def phase_sft(d, shape):
    import train_sft
    record_checkpoints()
    train_sft.main(["--model", os.path.join(d, "base"), "--data", "toy", "--toy_n", "8", "--batch_size", "4",
                    "--max_steps", "2", "--max_length", "4096", "--micro_batch_tokens", "4096", "--warmup_ratio", "0",
                    "--activation_checkpointing", "true", "--out_dir", os.path.join(d, "sft")])
    rows = [json.loads(line) for line in open(os.path.join(d, "sft", "metrics.jsonl"))]
    peaks = json.load(open(os.path.join(d, "sft", "peaks.json")))
    say(d, "sft", **peaks, step_s=[round(r["step_time"], 1) for r in rows], loss=[round(r["loss"], 3) for r in rows],
        trained_tokens_per_step=round(sum(r["trained_per_s"] * r["step_time"] for r in rows) / len(rows)))


def phase_sod(d, shape):
    import train_sod
    script_first_turns()
    mark_sod_phases()
    record_checkpoints()
    train_sod.main(["--student", os.path.join(d, "sft"), "--teacher", os.path.join(d, "base"), "--data", "toy",
                    "--val_bench", "", "--backend", "hf", "--prompts_per_step", "2", "--group_size", "2",
                    "--mini_batch_prompts", "2", "--max_turns", "3", "--max_response_len", "96",
                    "--overlong_buffer", "16", "--max_obs_chars", "256", "--tool_timeout", "10", "--lr", "1e-6",
                    "--max_steps", "1", "--save_every", "0", "--dump_every", "1", "--dump_episodes", "4",
                    "--activation_checkpointing", "true", "--micro_batch_tokens", "4096",
                    "--out_dir", os.path.join(d, "sod")])
    m = [json.loads(line) for line in open(os.path.join(d, "sod", "metrics.jsonl"))][-1]
    keep = ("tool_calls", "tool_error_rate", "response_len", "d_mean", "w_mean", "loss", "step_time")
    peaks = json.load(open(os.path.join(d, "sod", "peaks.json")))
    say(d, "sod", **peaks, **{k.replace("time/", "") + "_s" * k.startswith("time/"): round(v, 3) for k, v in m.items()
                     if k.startswith("time/") or k in keep})


def phase_eval(d, shape):
    import eval as evaluate
    script_first_turns()
    evaluate.main(["--bench", "toy", "--model", os.path.join(d, "sod"), "--limit", "2", "--k", "2",
                   "--max_response_len", "96", "--max_turns", "3", "--backend", "hf", "--batch_size", "4",
                   "--n_boot", "10", "--out_dir", os.path.join(d, "eval")])
    rep = json.load(open(os.path.join(d, "eval", "toy.json")))
    say(d, "eval", samples=len(rep["samples"]), **{k: rep["metrics"][k] for k in ("avg@2", "tool_calls")})


def phase_reload(d, shape):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import common
    import models
    came_in = AutoModelForCausalLM.from_pretrained(os.path.join(d, "base"), dtype="auto").dtype
    for run in ("sft", "sod"):
        ckpt = common.latest_checkpoint(os.path.join(d, run))
        path = os.path.join(ckpt, "model")
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        tok = AutoTokenizer.from_pretrained(path)
        ref = torch.load(os.path.join(ckpt, "smoke_reference_logits.pt"))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok.encode(PROBE)]), use_cache=False).logits.float()
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
        same_tok = tok.encode(PROBE + CALL) == models.make_qwen3_tokenizer().encode(PROBE + CALL) \
            and tok.chat_template == models.CHAT_TEMPLATE
        say(d, f"reload {run}", dtype_on_disk=str(model.dtype), came_in=str(came_in),
            dtype_kept=model.dtype == came_in, logits_identical=torch.equal(logits, ref[str(model.dtype)]),
            tokenizer_identical=same_tok, safetensors_gb=round(size / 1e9, 2))


PHASES = {"init": phase_init, "ledger": phase_ledger, "sft": phase_sft, "sod": phase_sod, "eval": phase_eval,
          "reload": phase_reload}

# -----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen3-0.6b", help="a size of models.QWEN3_SHAPES or models.TINY_SIZES")
    ap.add_argument("--dir", default="", help="working directory (default: a temporary one, removed at the end)")
    ap.add_argument("--phase", default="", help=argparse.SUPPRESS)  # internal: run one phase in this process
    args = ap.parse_args()
    if args.phase:
        return PHASES[args.phase](args.dir, args.shape)
    import models
    if not os.path.exists(models.QWEN3_BPE):
        raise SystemExit(f"smoke: no Qwen BPE ranks at {models.QWEN3_BPE}; run python models.py --fetch_qwen3 first")
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="sod_smoke_")
    d = args.dir or tmp.name
    os.makedirs(d, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times, peaks, t_all = {}, {}, time.time()
    for name in PHASES:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--phase", name, "--dir", d, "--shape",
                                 args.shape], cwd=d, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak resident memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        times[name], peaks[name] = time.time() - t0, usage.ru_maxrss * 1024 / GIB
        print(f"=== phase {name}: {times[name]:.0f} s, peak resident memory {peaks[name]:.1f} GiB", flush=True)
        if proc.returncode:
            raise SystemExit(f"smoke: phase {name} failed (exit {proc.returncode})")
    facts = {f["phase"]: f for f in map(json.loads, open(os.path.join(d, "facts.jsonl")))}
    ok = all(facts[f"reload {r}"][k] for r in ("sft", "sod") for k in ("logits_identical", "tokenizer_identical"))
    kept = all(facts[f"reload {r}"]["dtype_kept"] for r in ("sft", "sod"))
    if tmp is not None:
        tmp.cleanup()
    print(f"smoke {args.shape}: {'PASS' if ok and kept else 'FAIL'} in {time.time() - t_all:.0f} s, peak "
          f"{max(peaks.values()):.1f} GiB ({peaks['sod']:.1f} in SOD) | " + " ".join(
              f"{k} {times[k]:.0f}s/{peaks[k]:.1f}G" for k in PHASES)
          + f" | reload logits identical {ok}, dtype kept {kept}")
    sys.exit(0 if ok and kept else 1)


if __name__ == "__main__":
    main()
