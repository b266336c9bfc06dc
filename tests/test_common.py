import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch

import common
import models

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp_worker.py")


@dataclass
class Cfg:
    lr: float = 1e-3  # learning rate
    steps: int = 10  # number of steps
    name: str = "run"  # a name
    resume: bool = False  # resume?
    teacher: str | None = None  # optional path


def test_config_precedence(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nlr = 2e-3\nsteps = 5\n_private = 1\n")
    cfg = common.parse_config(Cfg, ["--config", str(f), "--steps=7", "--resume", "--teacher", "none"])
    assert (cfg.lr, cfg.steps, cfg.name, cfg.resume, cfg.teacher) == (2e-3, 7, "run", True, None)
    cfg = common.parse_config(Cfg, [f"--config={f}", "--name", "x", "--resume", "false", "--teacher", "t/m"])
    assert (cfg.lr, cfg.steps, cfg.name, cfg.resume, cfg.teacher) == (2e-3, 5, "x", False, "t/m")
    assert common.parse_config(Cfg, []) == Cfg()


def test_config_saved_file_round_trips(tmp_path):
    cfg = Cfg(lr=3e-4, steps=2, name="a b", resume=True, teacher=None)
    (tmp_path / "saved.py").write_text(common.config_to_py(cfg))
    assert common.parse_config(Cfg, ["--config", str(tmp_path / "saved.py")]) == cfg


@pytest.mark.parametrize("argv, msg", [
    (["--lrr", "1"], "unknown key 'lrr'"),
    (["--steps", "abc"], "expects int"),
    (["--resume", "maybe"], "expects true/false"),
    (["steps=3"], "unexpected argument"),
    (["--steps"], "needs a value"),
    (["--config", "/nonexistent.py"], "no such config file"),
])
def test_config_errors(argv, msg):
    with pytest.raises(SystemExit) as e:
        common.parse_config(Cfg, argv)
    assert msg in str(e.value)
    if "unknown" in msg:
        assert "valid keys: lr, steps, name, resume, teacher" in str(e.value)


def test_config_file_unknown_key(tmp_path):
    (tmp_path / "c.py").write_text("lr = 1\nbatch = 3\n")
    with pytest.raises(SystemExit, match="unknown key 'batch'"):
        common.parse_config(Cfg, ["--config", str(tmp_path / "c.py")])


def run_worker(out, *args, nproc=1, check=True):
    if nproc == 1:
        cmd = [sys.executable, WORKER, str(out), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               WORKER, str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def load_params(out):
    return torch.load(os.path.join(out, "params.pt"))


def test_fsdp_two_processes_equal_one(tmp_path):
    run_worker(tmp_path / "one", "--steps", "2", "--sgd")
    run_worker(tmp_path / "two", "--steps", "2", "--sgd", nproc=2)
    a, b = load_params(tmp_path / "one"), load_params(tmp_path / "two")
    assert a.keys() == b.keys()
    init = models.tiny_qwen3(models.make_toy_tokenizer(), "tiny", seed=0).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # the step did move the weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    la, lb = json.load(open(tmp_path / "one" / "losses.json")), json.load(open(tmp_path / "two" / "losses.json"))
    assert len(la) == 2 and abs(la[0] - lb[0]) < 1e-5 and abs(la[1] - lb[1]) < 1e-5


def test_checkpoint_round_trip_and_resume(tmp_path):
    from transformers import AutoModelForCausalLM
    run_worker(tmp_path / "full", "--steps", "3")
    run_worker(tmp_path / "split", "--steps", "1", "--save_at", "1")
    ckpt = common.latest_checkpoint(str(tmp_path / "split"))
    assert ckpt.endswith("step_000001")
    assert sorted(os.listdir(ckpt)) == ["config.py", "model", "optimizer", "rng_rank0.pt", "state.json"]
    assert json.load(open(os.path.join(ckpt, "state.json")))["cursor"] == 1
    # save -> load round trip: the HF model loaded from disk gives the trainer's logits exactly
    hf = AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "model"), dtype=torch.float32)
    trained = load_params(tmp_path / "split")
    x = torch.randint(0, 500, (2, 12))
    ref = AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "model"), dtype=torch.float32)
    ref.load_state_dict(trained)
    assert torch.equal(hf(x).logits, ref(x).logits)
    # resume continues with identical state: losses and final weights equal the uninterrupted run
    run_worker(tmp_path / "split", "--steps", "3", "--resume")
    full, split = load_params(tmp_path / "full"), load_params(tmp_path / "split")
    assert json.load(open(tmp_path / "split" / "losses.json")) == json.load(open(tmp_path / "full" / "losses.json"))[1:]
    assert all(torch.equal(full[k], split[k]) for k in full)


# the worker under a patched torch.distributed.checkpoint.save that blocks while writing step 2's optimizer shards
HANG_IN_SAVE = """
import runpy, sys, time
import torch.distributed.checkpoint as dcp
real_save = dcp.save
def slow_save(state_dict, checkpoint_id=None, **kw):
    if "step_000002" in str(checkpoint_id):
        print("HANGING", flush=True)
        time.sleep(600)
    return real_save(state_dict, checkpoint_id=checkpoint_id, **kw)
dcp.save = slow_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", HANG_IN_SAVE, WORKER, str(out), "--steps", "2", "--save_at", "1",
                          "--hang_saving_step", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env)
    deadline = time.time() + 120
    for line in p.stdout:
        if "HANGING" in line or time.time() > deadline:
            break
    p.kill()
    p.wait()
    assert os.path.isdir(out / ".tmp_step_000002")  # the half-written checkpoint exists ...
    ckpt = common.latest_checkpoint(str(out))
    assert ckpt.endswith("step_000001")  # ... but is never picked up
    r = run_worker(out, "--steps", "2", "--resume")
    assert "resume:" in r.stdout and "step 1" in r.stdout


@pytest.mark.parametrize("flags", [(), ("--bf16",)])
def test_two_process_resume_reads_sharded_optimizer_state(tmp_path, flags):
    # AdamW state (and, for a model that came in bf16, the fp32 master weights) saved as each rank's shards and read
    # back the same way: the resumed run equals the uninterrupted one
    run_worker(tmp_path / "full", "--steps", "3", *flags, nproc=2)
    run_worker(tmp_path / "split", "--steps", "1", "--save_at", "1", *flags, nproc=2)
    ckpt = common.latest_checkpoint(str(tmp_path / "split"))
    assert "optimizer.pt" not in os.listdir(ckpt) and os.listdir(os.path.join(ckpt, "optimizer"))
    run_worker(tmp_path / "split", "--steps", "3", "--resume", *flags, nproc=2)
    full, split = load_params(tmp_path / "full"), load_params(tmp_path / "split")
    assert json.load(open(tmp_path / "split" / "losses.json")) == json.load(open(tmp_path / "full" / "losses.json"))[1:]
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_keep_last_prunes_only_after_the_new_checkpoint_is_complete(tmp_path, monkeypatch):
    import models
    dist = common.init_dist("cpu")
    try:
        tok = models.make_toy_tokenizer()
        model = common.wrap_fsdp(models.tiny_qwen3(tok, "tiny"), dist)
        opt = torch.optim.AdamW(model.parameters())
        cfg = Cfg()
        for step in (1, 2, 3):
            common.save_checkpoint(str(tmp_path), step, model, tok, opt, cfg, {}, keep_last=2)
        assert sorted(os.listdir(tmp_path)) == ["step_000002", "step_000003"]
        # a save that dies before it completes deletes nothing
        monkeypatch.setattr(common, "full_state_dict", lambda m: (_ for _ in ()).throw(RuntimeError("disk full")))
        with pytest.raises(RuntimeError, match="disk full"):
            common.save_checkpoint(str(tmp_path), 4, model, tok, opt, cfg, {}, keep_last=2)
        assert [os.path.basename(c) for c in common.checkpoints(str(tmp_path))] == ["step_000002", "step_000003"]
        monkeypatch.undo()
        common.save_checkpoint(str(tmp_path), 5, model, tok, opt, cfg, {}, keep_last=0)  # 0 keeps all
        assert len(common.checkpoints(str(tmp_path))) == 3
    finally:
        common.destroy_dist()


def test_resolve_model_path(tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from safetensors.torch import save_file
    from transformers import Qwen3Config
    hf = tmp_path / "hf"
    hf.mkdir()
    Qwen3Config().save_pretrained(hf)
    run = tmp_path / "run"
    for step in (3, 12):  # as much of a checkpoint as common.damage looks at
        (run / f"step_{step:06d}" / "model").mkdir(parents=True)
        (run / f"step_{step:06d}" / "state.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, run / f"step_{step:06d}" / "model" / "model.safetensors")
    (run / ".tmp_step_000020").mkdir()  # an incomplete checkpoint is never picked
    assert models.resolve_model_path(str(hf)) == str(hf)
    assert models.resolve_model_path(str(run)) == str(run / "step_000012" / "model")
    Qwen3Config().save_pretrained(run / "step_000003" / "model")  # one checkpoint named: its model, not the newest
    assert models.resolve_model_path(str(run / "step_000003")) == str(run / "step_000003" / "model")
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo, **kw: None)  # a Hub that has every model
    assert models.resolve_model_path("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert models.resolve_model_path("toy:tiny") == "toy:tiny" and models.resolve_model_path("shape:x") == "shape:x"
    for bad in (str(tmp_path), str(tmp_path / "missing"), "./out/nothing", "not-a-hub-id"):
        with pytest.raises(SystemExit):
            models.resolve_model_path(bad)


def test_full_params_yields_full_weights_once_in_the_asked_dtype():
    import models
    dist = common.init_dist("cpu")
    try:
        tok = models.make_toy_tokenizer()
        ref = models.tiny_qwen3(tok, "tiny", seed=3)
        model = common.wrap_fsdp(models.tiny_qwen3(tok, "tiny", seed=3), dist)
        got = list(common.full_params(model, torch.bfloat16))
        want = dict(ref.named_parameters())  # tied: embed_tokens.weight once, no lm_head.weight
        assert [n for n, _ in got] == list(want) and "lm_head.weight" not in want
        for name, t in got:
            assert type(t) is torch.Tensor and t.dtype == torch.bfloat16 and torch.equal(t, want[name].bfloat16())
    finally:
        common.destroy_dist()


def test_metrics_logger_without_wandb(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    log = common.MetricsLogger(str(tmp_path), Cfg(), wandb_project="sod")
    log.log(1, {"loss": 0.5})
    assert "wandb: not installed" in capsys.readouterr().out
    assert json.loads(open(tmp_path / "metrics.jsonl").readline())["loss"] == 0.5


def test_checkpoints_keep_the_dtype_the_weights_came_in(tmp_path):
    """A bf16 model is trained in fp32 and written back in bf16 (the fp32 master weights rounded to nearest even, the
    config saying bfloat16); an fp32 toy model stays fp32, bit for bit."""
    from safetensors import safe_open

    import models
    tok = models.make_toy_tokenizer()
    models.tiny_qwen3(tok, "tiny", seed=4, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    dist = common.init_dist("cpu")
    try:
        for spec, want in ((str(tmp_path / "bf16"), torch.bfloat16), ("toy:tiny", torch.float32)):
            model, tok = models.load_model(spec)
            assert model.checkpoint_dtype == want and model.dtype == torch.float32  # trained in fp32 either way
            model = common.wrap_fsdp(model, dist)
            with torch.no_grad():  # an update that bf16 cannot hold exactly
                for p in model.parameters():
                    p.add_(1e-3)
            held = {k: v.clone() for k, v in model.state_dict().items()}
            out = tmp_path / f"run_{str(want)[6:]}"
            common.save_checkpoint(str(out), 1, model, tok, None, Cfg(), {})
            path = out / "step_000001" / "model"
            assert json.load(open(path / "config.json"))["dtype"] == str(want)[6:]
            with safe_open(path / "model.safetensors", "pt") as f:  # the tied head is written once, as it came
                assert "lm_head.weight" not in f.keys() and f.get_tensor("model.norm.weight").dtype == want
            back, _ = models.load_model(str(path), dtype="auto")
            assert back.dtype == want and back.checkpoint_dtype == want
            for k, v in back.state_dict().items():
                assert torch.equal(v, held[k].to(want)), k
    finally:
        common.destroy_dist()


def test_resume_of_a_bf16_model_continues_from_its_fp32_master_weights(tmp_path):
    """model/ holds the bf16 rounding of the weights; the resumed run gets the fp32 master weights back exactly (an
    update below bf16's spacing survives), and an fp32 model stores no second copy."""
    import torch.distributed.checkpoint as dcp

    import models
    tok = models.make_toy_tokenizer()
    models.tiny_qwen3(tok, "tiny", seed=4, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    dist = common.init_dist("cpu")
    try:
        for spec, master in ((str(tmp_path / "bf16"), True), ("toy:tiny", False)):
            model, tok = models.load_model(spec)
            model = common.wrap_fsdp(model, dist)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
            model(torch.tensor([[1, 2, 3, 4]])).logits.float().square().mean().backward()
            opt.step()  # Adam moves every weight by ~lr: below bf16's spacing for most of them
            held = {k: v.detach().clone() for k, v in model.state_dict().items()}
            out = tmp_path / f"run_{master}"
            ckpt = common.save_checkpoint(str(out), 1, model, tok, opt, Cfg(), {})
            keys = dcp.FileSystemReader(os.path.join(ckpt, "optimizer")).read_metadata().state_dict_metadata
            assert any(k.startswith("master.") for k in keys) is master
            back, _ = models.load_model(os.path.join(ckpt, "model"))
            if master:  # the rounded copy alone would lose the step
                assert not all(torch.equal(v, held[k]) for k, v in back.state_dict().items())
            back = common.wrap_fsdp(back, dist)
            common.load_checkpoint(ckpt, back, torch.optim.AdamW(back.parameters(), lr=1e-5))
            for k, v in back.state_dict().items():
                assert torch.equal(v, held[k]), k
    finally:
        common.destroy_dist()


def test_one_cpu_process_trains_a_plain_module_that_its_engine_shares():
    """In a world of one on CPU, wrap_fsdp leaves the module plain (no DTensor) and the HF engine shares its
    parameters: after an optimizer step the engine samples with the new weights, the push finds them in place; a
    sharded world gives the engine its own copy."""
    import models
    import rollout
    assert common.shards(common.Dist(0, 2, 0, torch.device("cpu")))
    assert common.shards(common.Dist(0, 1, 0, torch.device("cuda", 0)))
    dist = common.init_dist("cpu")
    try:
        tok = models.make_toy_tokenizer()
        assert not common.shards(dist)
        model = models.tiny_qwen3(tok, "tiny", seed=6)
        eng = rollout.make_engine("hf", "unused", tok, model=model, share=True)
        model = common.wrap_fsdp(model, dist)
        assert eng.model is model and not hasattr(model, "reshard")
        assert all(type(p) is torch.nn.Parameter for p in model.parameters())
        prompt = tok.encode("<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n<|im_start|>assistant\n")
        old = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        ids = torch.tensor([prompt])
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        eng.update_weights(common.full_params(model))  # checked (names, shapes, coverage), nothing to copy
        new, lps, _ = eng.generate([prompt], 6, temperature=0.0)[0]

        def logp(state):  # independent: a full forward of a fresh model holding `state`
            ref = models.tiny_qwen3(tok, "tiny")
            ref.load_state_dict(state)
            with torch.no_grad():
                logits = ref(torch.tensor([prompt + new])).logits[0, len(prompt) - 1:-1]
            return torch.log_softmax(logits, -1).gather(-1, torch.tensor(new)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(lps), logp(model.state_dict()), atol=1e-4)
        assert not torch.allclose(torch.tensor(lps), logp(old), atol=1e-2)
        with pytest.raises(KeyError):
            eng.update_weights([("model.no_such_layer.weight", torch.zeros(1))])
        copied = rollout.make_engine("hf", "unused", tok, model=model)
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copied.model.parameters(), model.parameters()))
    finally:
        common.destroy_dist()


def test_activation_checkpointing_recomputes_and_keeps_the_gradients():
    """wrap_fsdp's activation checkpointing is transformers' own switch, renamed in 5.24 (activation_checkpointing_
    enable; gradient_checkpointing_enable before): whichever this version has, each block runs again in backward and
    the gradients are the plain model's. CI runs this on the vllm extra's transformers (< 5.21) too."""
    tok = models.make_toy_tokenizer()
    ids = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    grads, calls = [], []
    for ckpt in (False, True):
        model = common.wrap_fsdp(models.tiny_qwen3(tok, "tiny", seed=1), common.Dist(0, 1, 0, torch.device("cpu")),
                                 activation_checkpointing=ckpt).train()
        n = [0]
        common.decoder_blocks(model)[0].mlp.register_forward_pre_hook(lambda *_, n=n: n.__setitem__(0, n[0] + 1))
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append([p.grad for p in model.parameters()])
        calls.append(n[0])
    assert calls == [1, 2]  # checkpointed: the block runs again in backward (its MLP inside it)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
