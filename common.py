"""Shared plumbing for the training and eval scripts: config, distributed init, FSDP2, checkpoints, logging.

Nothing here knows about SOD. Every script does the same: `cfg = parse_config(Config)`, `dist = init_dist()`,
`model = wrap_fsdp(model, dist, ...)`, `save_checkpoint(...)` / `load_checkpoint(...)`, `print0(...)`.
"""

import dataclasses
import datetime
import glob
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
import typing
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist

# -----------------------------------------------------------------------------
# Config: a flat dataclass, then `--config FILE` (plain assignments), then `--key=value` / `--key value`


def _convert(name, typ, raw):
    """Parse one command-line string into the dataclass field's type (int, float, bool, str, or Optional of one)."""
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        typ = args[0]
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"config: --{name} expects true/false, got {raw!r}")
    try:
        return typ(raw)
    except ValueError:
        raise SystemExit(f"config: --{name} expects {typ.__name__}, got {raw!r}") from None


def print_help(cls):
    """The script's docstring, then each key with its type, default and the comment on its line, under the section
    comments of the dataclass: its source is the documentation, so the two never drift apart."""
    import inspect
    import io
    import tokenize
    src, hints = inspect.getsource(cls), typing.get_type_hints(cls)
    notes = {t.start[0]: t.string.lstrip("# ") for t in tokenize.generate_tokens(io.StringIO(src).readline)
             if t.type == tokenize.COMMENT}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    out = [f"{(sys.modules[cls.__module__].__doc__ or '').strip()}\n\nusage: python {os.path.basename(sys.argv[0])} "
           "[--config FILE] [--key=value | --key value ...] (FILE: plain assignments; a bare boolean --key is true)"]
    for i, line in enumerate(src.splitlines(), 1):
        if (m := re.match(r"\s+(\w+)\s*:", line)) and m[1] in defaults:
            typ = " | ".join("None" if a is type(None) else a.__name__ for a in typing.get_args(hints[m[1]])) \
                or hints[m[1]].__name__
            out.append(f"  --{m[1]:<24} {typ:<12} {defaults[m[1]]!r:<18} {notes.get(i, '')}")
        elif line.strip().startswith("#"):
            out.append(f"\n{notes[i]}:")
    print("\n".join(out))


def parse_config(cls, argv=None):
    """Build `cls` from defaults, then `--config FILE`, then command-line overrides. Unknown keys are an error;
    `--help` (or -h) prints every key and exits, before anything is loaded."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print_help(cls)
        raise SystemExit(0)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    values = {}

    def set_key(key, value, source):
        if key not in hints:
            raise SystemExit(f"config: unknown key {key!r} in {source}; valid keys: {', '.join(valid)}")
        values[key] = value

    if "--config" in argv or any(a.startswith("--config=") for a in argv):
        i = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
        path = argv[i].split("=", 1)[1] if "=" in argv[i] else argv[i + 1]
        del argv[i:i + (1 if "=" in argv[i] else 2)]
        if not os.path.isfile(path):
            raise SystemExit(f"config: no such config file: {path}")
        ns = {}
        exec(compile(open(path).read(), path, "exec"), ns)
        for k, v in ns.items():
            if not k.startswith("_") and not isinstance(v, type(os)):
                set_key(k, v, path)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise SystemExit(f"config: unexpected argument {arg!r}; use --key=value or --key value")
        key, eq, raw = arg[2:].partition("=")
        if key not in hints:
            set_key(key, None, "the command line")  # raises with the list of valid keys
        if not eq:  # `--flag` alone means true for booleans; otherwise the value is the next argument
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if hints[key] is bool and (nxt is None or nxt.startswith("--")):
                raw = "true"
            elif nxt is None:
                raise SystemExit(f"config: --{key} needs a value")
            else:
                raw, i = nxt, i + 1
        set_key(key, _convert(key, hints[key], raw), "the command line")
        i += 1
    return cls(**values)


def config_to_py(cfg):
    """The resolved config as plain assignments: `--config` accepts the file it is saved to."""
    return "".join(f"{f.name} = {getattr(cfg, f.name)!r}\n" for f in dataclasses.fields(cfg))


def print_config(cfg):
    print0("config:\n" + "".join(f"  {line}\n" for line in config_to_py(cfg).splitlines()), end="")

# -----------------------------------------------------------------------------
# Distributed: the same path under `python` (a world of one) and `torchrun`; nccl on CUDA, gloo on CPU


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_dist(device="auto", timeout_s=1800):
    """Initialise the process group (a world of one under plain `python`) and pick the device. Prints the choice."""
    if "RANK" not in os.environ:  # plain `python script.py`: a one-process group, so FSDP2 runs the same code
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        # on CUDA, gloo too: the scripts reduce small CPU tensors (counts, metrics), which NCCL cannot carry
        tdist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None,
                                 timeout=datetime.timedelta(seconds=timeout_s))  # the wait for the slowest rank
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM ends a run as Ctrl-C does (stopped)
    dist = Dist(rank, world, local, dev)
    print0(f"dist: world {world}, backend {tdist.get_backend()}, device {dev.type}, timeout {timeout_s / 60:.0f} min, "
           f"params fp32 / compute {'bf16' if use_cuda else 'fp32 (no CUDA: no bf16 autocast)'}")
    return dist


def destroy_dist():
    if tdist.is_initialized():
        tdist.destroy_process_group()


def exit_process(code=0):
    """End a script whose work is done without finalizing the interpreter (call it last, from __main__). A gloo worker
    thread can still be releasing the last collective's tensors, which takes the GIL; a thread that takes the GIL
    while the interpreter finalizes is ended by pthread_exit, which unwinds through a noexcept destructor and aborts
    the process (std::terminate) after all its work is done: seen in about one 2-process CPU run in fifteen."""
    if "wandb" in sys.modules and getattr(sys.modules["wandb"], "run", None) is not None:
        sys.modules["wandb"].finish()  # what its atexit hook would do
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def print0(*args, **kwargs):
    if not tdist.is_initialized() or tdist.get_rank() == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t):
    """Sum a tensor over ranks (in place); a visible helper so every reduction in the scripts is explicit."""
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def pad_to_max_count(mine, empty):
    """`mine` padded with `empty` items to the longest list on any rank. Every forward/backward of an FSDP2 model is
    a fixed sequence of all-gathers and reduce-scatters on one process group, so every rank must run the same number
    of passes: a rank with fewer micro-batches runs empty ones (no tokens that count) instead of leaving the others
    waiting in a collective (a hang) or pairing their collectives with the wrong layer's (silent corruption)."""
    most = torch.tensor([len(mine)])
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(most, op=tdist.ReduceOp.MAX)
    return list(mine) + [empty] * (int(most) - len(mine))


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n=0):
    """Set torch's intra-op threads; returns (count, why) and prints both in one line. n > 0 is taken as it is, then
    OMP_NUM_THREADS; else the cores of this process's CPU set idle now (/proc/stat over 0.3 s; at least one), split
    among this machine's ranks. Torch's default, a thread per core, makes every op wait for its slowest thread: one
    whose core a busy neighbour holds stalls them all (a toy step took 15-90x its idle time next to one of them)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
    ranks, env = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), os.environ.get("OMP_NUM_THREADS", "")  # torchrun's
    if n > 0 or env.isdigit():
        n, why = (n, "--threads") if n > 0 else (int(env), "OMP_NUM_THREADS")
    else:
        try:  # each of our CPUs' ticks (user nice system idle iowait irq softirq steal) 0.3 s apart, while we sleep
            stat = lambda: np.array([line.split()[1:9] for line in open("/proc/stat") if line.startswith("cpu")
                                     and line[3].isdigit() and int(line.split()[0][3:]) in cpus], dtype=np.int64)
            t0 = stat()
            time.sleep(0.3)
            d = stat() - t0
            free = float(((d[:, 3] + d[:, 4]) / np.maximum(d.sum(1), 1)).sum())
        except OSError:  # no /proc
            free = len(cpus)
        n = max(1, round(free) // ranks)
        why = f"{free:.1f} of {len(cpus)} cores idle" + (f", shared by {ranks} local ranks" if ranks > 1 else "")
    torch.set_num_threads(n)
    print0(f"threads: {n} ({why}; --threads N sets it)")
    return n, why

# -----------------------------------------------------------------------------
# FSDP2


def decoder_blocks(model):
    return model.model.layers  # Qwen3ForCausalLM: embed -> layers -> norm -> lm_head


def shards(dist):
    """Whether wrap_fsdp shards: always but in a world of one on CPU, where FSDP2 would only add its unsharded
    buffers (+1.7 GiB at the Qwen3-0.6B shape) and no mixed precision (that is CUDA's), so the module stays plain."""
    return dist.world_size > 1 or dist.device.type == "cuda"


def wrap_fsdp(model, dist, *, compile=False, activation_checkpointing=False, reshard_after_forward=True, offload=False):
    """FSDP2 from outside the model, torchtitan order: activation checkpointing, per-block compile, fully_shard each
    decoder block, then the root. On CUDA params compute in bf16 and gradients reduce in fp32; the sharded master
    weights stay fp32 (what the optimizer updates and what checkpoints save). FSDP averages gradients over ranks,
    so a loss meant as a global token mean is written local_sum / (global_count / world_size) on every rank.
    `offload` keeps the sharded params in CPU memory and copies them in per block (the frozen teacher's option).
    The model arrives in host memory and is never moved whole: each fully_shard call moves its own block to the
    device, keeps this rank's shard and frees the rest, so the peak is the shards plus one block. In a world of one
    on CPU (see `shards`) the model is returned plain, after the same activation checkpointing and compile: its
    callers (optimizer, checkpoints, full_params, clip_grad_norm_) take plain modules as they take FSDP2 ones."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if activation_checkpointing:  # HF's own switch keeps parameter names intact (no wrapper prefixes in checkpoints)
        if hasattr(model, "activation_checkpointing_enable"):  # the name from transformers 5.24 on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if compile:
        for block in decoder_blocks(model):
            block.compile(dynamic=True)
    print0(f"fsdp2: {len(decoder_blocks(model))} blocks + root, activation checkpointing "
           f"{'on' if activation_checkpointing else 'off'}, per-block compile {'on' if compile else 'off'}"
           + (", params offloaded to CPU" if offload and dist.device.type == "cuda" else "")
           + ("" if shards(dist) else ": not sharded (one process on CPU: a plain module)"))
    if not shards(dist):
        return model
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    # Callers only read the model's outputs (no in-place op on them), the misuse this torch warning is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if dist.device.type == "cuda" else MixedPrecisionPolicy()
    kw = dict(mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward,
              offload_policy=CPUOffloadPolicy() if offload and dist.device.type == "cuda" else OffloadPolicy())
    for block in decoder_blocks(model):
        fully_shard(block, **kw)
    # The root (embeddings, final norm, lm_head) stays gathered after forward: the loss reads lm_head.weight
    # outside the model's forward (token_logprobs), and backward would gather it again at once anyway.
    fully_shard(model, **{**kw, "reshard_after_forward": False})
    return model


def full_state_dict(model):
    """The full (unsharded) state dict in CPU memory, on rank 0 only (other ranks get an empty dict: torch's rule for
    full_state_dict with cpu_offload); keys as in the HF model. For writing checkpoints, not for the weight push."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def final_hidden_states(model, **inputs):
    """The backbone's output (the final norm's) for a causal LM forward that skips the (B, T, V) logits. Taken by a
    hook, so the FSDP2 root's forward (which gathers embeddings, norm and lm_head and keeps them until backward)
    runs as usual and no other layer's hidden states are kept (as output_hidden_states=True would)."""
    box = []
    hook = model.model.register_forward_hook(lambda mod, args, out: box.append(out.last_hidden_state))
    try:
        model(**inputs, logits_to_keep=torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device),
              use_cache=False)
    finally:
        hook.remove()
    return box[0]


def full_params(model, dtype=None):
    """Yield (HF name, full tensor) for every parameter, on EVERY rank, one parameter at a time: each is all-gathered
    from its FSDP2 shards (a collective: all ranks iterate in the same order) on the device, cast to `dtype` before
    the gather (half the traffic for bf16), and dropped once the consumer moves on. Tied weights come once, under
    their first name (the engine's tie restores the other)."""
    if hasattr(model, "reshard"):  # a root left gathered after a forward would show its unsharded compute copy
        model.reshard()
    for name, p in model.named_parameters():
        t = p.detach() if dtype is None else p.detach().to(dtype)
        yield name, t.full_tensor() if hasattr(t, "full_tensor") else t


# -----------------------------------------------------------------------------
# Checkpoints: out_dir/step_XXXXXX/{model/ (HF format), optimizer/ (sharded), rng_rank*.pt, state.json, config.py}
# written under out_dir/.tmp_step_XXXXXX and renamed at the end, so a crash never leaves a half checkpoint


def step_dir(out_dir, step):
    return os.path.join(out_dir, f"step_{step:06d}")


def checkpoints(out_dir):
    """The complete checkpoints of a run, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    return [os.path.join(out_dir, d) for d in sorted(os.listdir(out_dir)) if d.startswith("step_") and d[5:].isdigit()]


def damage(ckpt):
    """None for an intact checkpoint, else what is wrong, naming the file. Checkpoints are renamed into place whole,
    but a disk that filled up or a copy cut short still leaves files shorter than their own header (safetensors)
    or index (the optimizer's .metadata) says."""
    from safetensors import safe_open
    from torch.distributed.checkpoint import FileSystemReader
    path, opt = os.path.join(ckpt, "state.json"), os.path.join(ckpt, "optimizer")
    try:
        json.load(open(path))
        for path in glob.glob(os.path.join(ckpt, "model", "*.safetensors")) or [os.path.join(ckpt, "model", "none")]:
            with safe_open(path, "pt"):  # checks that the file covers every tensor its header lists
                pass
        path = os.path.join(opt, ".metadata")
        for s in FileSystemReader(opt).read_metadata().storage_data.values() if os.path.isdir(opt) else []:
            if os.path.getsize(path := os.path.join(opt, s.relative_path)) < s.offset + s.length:
                raise EOFError(f"truncated: {os.path.getsize(path):,} of {s.offset + s.length:,} bytes")
    except Exception as e:  # missing, not JSON, cut short, an index that does not unpickle: all mean damaged
        return f"{path} ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})"
    return None


def latest_checkpoint(out_dir):
    """The newest intact checkpoint of a run, or None if it has none. Damaged newer ones are passed over with one
    warning line and left on disk; if every one is damaged, stop."""
    found, bad = checkpoints(out_dir), []
    for path in reversed(found):
        if (problem := damage(path)) is None:
            if bad:
                print0(f"warning: skipping damaged checkpoint(s): {'; '.join(bad)}; using {path} (nothing deleted)")
            return path
        bad.append(problem)
    if found:
        raise SystemExit(f"checkpoint: no intact checkpoint in {out_dir}: {'; '.join(bad)}")
    return None


def save_checkpoint(out_dir, step, model, tokenizer, optimizer, cfg, state, keep_last=0):
    """Collective: every rank calls it. `state` (JSON-able: data cursor, step, ...) is restored by load_checkpoint.
    The optimizer state is written as each rank's own shards (torch.distributed.checkpoint), never gathered. Once the
    new checkpoint is complete, all but the newest `keep_last` are deleted (0 keeps all). The weights in `model/` are
    in the dtype they came in (`model.checkpoint_dtype`, set by load_model): a bf16 model stays bf16 there, what a
    user loads and evaluates. Their fp32 master weights, which bf16 would round (at lr 1e-6 an update is below bf16's
    spacing), go with the optimizer's shards, so a resumed run continues from exactly the weights it stopped at."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    t0 = time.time()
    rank = tdist.get_rank()
    dtype = getattr(model, "checkpoint_dtype", torch.float32)  # the dtype the weights came in (load_model)
    final, tmp = step_dir(out_dir, step), os.path.join(out_dir, f".tmp_step_{step:06d}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    tdist.barrier()
    model_sd = full_state_dict(model)
    if optimizer is not None:
        sd = {"optimizer": get_optimizer_state_dict(model, optimizer)}
        if dtype != next(model.parameters()).dtype:  # model/ rounds them: keep the master weights exactly
            sd["master"] = get_model_state_dict(model)
        dcp.save(sd, checkpoint_id=os.path.join(tmp, "optimizer"))
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    torch.save(rng, os.path.join(tmp, f"rng_rank{rank}.pt"))
    if rank == 0:
        cast = {}  # tied weights (one tensor under two names) stay one tensor: save_pretrained writes them once
        for k, v in model_sd.items():
            if v.is_floating_point():
                model_sd[k] = cast.setdefault(v.data_ptr(), v.to(dtype))
        model.save_pretrained(os.path.join(tmp, "model"), state_dict=model_sd, safe_serialization=True)
        model.config.dtype = dtype  # save_pretrained writes the dtype of the (fp32) parameters into config.json
        model.config.save_pretrained(os.path.join(tmp, "model"))
        tokenizer.save_pretrained(os.path.join(tmp, "model"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": step, "world_size": tdist.get_world_size(), **state}, f, indent=1)
        with open(os.path.join(tmp, "config.py"), "w") as f:
            f.write(config_to_py(cfg))
    tdist.barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        # only now that `final` is complete; each old one is renamed out of the step_* namespace before it is removed,
        # so a crash in between never leaves a half-deleted directory that latest_checkpoint would pick
        for old in checkpoints(out_dir)[:-keep_last] if keep_last else []:
            doomed = os.path.join(out_dir, ".del_" + os.path.basename(old))
            os.rename(old, doomed)
            shutil.rmtree(doomed)
    tdist.barrier()
    print0(f"checkpoint: {final} ({time.time() - t0:.1f}s)")
    return final


def load_checkpoint(path, model, optimizer):
    """Restore optimizer, RNG and the saved `state` dict. Model weights come from `path/model` via load_model,
    before wrapping; where that copy was rounded (bf16), the fp32 master weights saved with the optimizer replace
    them. Each rank reads only the shards it owns (resharded by torch.distributed.checkpoint if the world size
    changed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as dsd
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    rank = tdist.get_rank()
    if state["world_size"] != tdist.get_world_size():
        print0(f"resume: world size {state['world_size']} -> {tdist.get_world_size()}: data order and RNG streams "
               "continue from rank 0's state, so the run is not bit-exact")
    if optimizer is not None:
        sd = {"optimizer": dsd.get_optimizer_state_dict(model, optimizer)}  # this rank's shards, filled in place
        saved = dcp.FileSystemReader(os.path.join(path, "optimizer")).read_metadata().state_dict_metadata
        if any(k.startswith("master.") for k in saved):
            sd["master"] = dsd.get_model_state_dict(model)
        dcp.load(sd, checkpoint_id=os.path.join(path, "optimizer"))
        if "master" in sd:
            dsd.set_model_state_dict(model, sd["master"])
        dsd.set_optimizer_state_dict(model, optimizer, optim_state_dict=sd["optimizer"])
    rng_path = os.path.join(path, f"rng_rank{rank}.pt")
    rng = torch.load(rng_path if os.path.exists(rng_path) else os.path.join(path, "rng_rank0.pt"), weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    print0(f"resume: {path} (step {state['step']})")
    return state

# -----------------------------------------------------------------------------
# Logging: one JSONL line per step in out_dir/metrics.jsonl, optional wandb


class MetricsLogger:
    def __init__(self, out_dir, cfg, wandb_project=None):
        self.main = not tdist.is_initialized() or tdist.get_rank() == 0
        self.path, self.wandb = os.path.join(out_dir, "metrics.jsonl"), None
        if self.main:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "config.py"), "w") as f:
                f.write(config_to_py(cfg))
            if wandb_project and importlib.util.find_spec("wandb") is None:
                print(f"wandb: not installed (pip install wandb), --wandb_project {wandb_project} ignored; metrics go "
                      f"to {self.path}", flush=True)
            elif wandb_project:
                import wandb  # optional extra: pip install .[wandb]
                self.wandb = wandb.init(project=wandb_project, config=dataclasses.asdict(cfg),
                                        name=os.path.basename(os.path.normpath(out_dir)))

    def log(self, step, metrics):
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
