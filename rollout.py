"""Rollouts: the tool-integrated-reasoning agent loop and the engines that sample for it.

An episode is built token-in, token-out: the prompt ids, each assistant turn's ids exactly as sampled (mask 1, with
the sampler's log-probs), then the ids of the tool-response turn (mask 0, tools.tool_response_ids). History is never
re-rendered: the ids the student sampled are the ids the student, the teacher and the loss see. Engines take one
turn at a time: `HFEngine` (transformers, our own continuous batching) and `VLLMEngine` (vLLM, CUDA only).

    python rollout.py --model out/toy_sft --n 4        # roll out a few toy problems with a trained model, print them
    python rollout.py --model Qwen/Qwen3-0.6B --backend vllm --n 2 --max_response_len 4096   # on one GPU
"""

import copy
import inspect
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

import common
import models
import sod_loss
from tools import tool_protocol, tool_response_ids, tool_turn

# -----------------------------------------------------------------------------
# Episodes and the agent loop


@dataclass
class Episode:
    prompt_ids: list
    ids: list  # prompt + response, exactly what the models score
    mask: list  # 1 on sampled tokens (assistant turns with their <|im_end|>), 0 on prompt and tool output
    sampler_logp: list  # the sampler's log-prob of each sampled token, 0.0 elsewhere
    turns: list = field(default_factory=list)  # per assistant turn: text, calls, observations, statuses
    num_turns: int = 0
    num_tool_calls: int = 0
    tool_errors: int = 0  # malformed calls and code that failed (error, memory, killed)
    tool_timeouts: int = 0
    overlong: bool = False
    finish: str = ""  # answer (a turn without a tool call) | max_turns | length | malformed
    response_text: str = ""
    score: float | None = None
    acc: bool | None = None
    pred: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def response_len(self):
        return len(self.ids) - len(self.prompt_ids)

    @property
    def step_ids(self):
        """Assistant step (turn) index per token, -1 off the mask."""
        return sod_loss.step_ids(torch.tensor([self.mask]))[0].tolist()


def turn_seed(seed, episode, turn):
    """The sampling seed of one (episode, turn): a hash, so that nearby seeds give unrelated streams."""
    import hashlib
    return int.from_bytes(hashlib.blake2b(f"{seed}/{episode}/{turn}".encode(), digest_size=8).digest()) >> 1


def rollout(engine, tokenizer, prompt_ids_list, *, max_turns, max_response_len, temperature=1.0, top_p=1.0,
            execute=None, tools=None, mode="continuous", seed=None):
    """One episode per prompt; an episode ends on a turn without a tool call (its answer), at max_turns, when the
    response reaches max_response_len tokens (overlong), or when the tool protocol ends it (malformed). An engine
    with a `max_model_len` (vLLM) lowers that budget to what fits (train_sod sizes it so that this never binds).

    continuous: an episode's turn goes to the tool pool the moment the engine returns it, and its next turn is
    submitted the moment its tool results are back, while the others keep decoding; sync: each turn waits for every
    episode's generation, then for every tool call. Turn t of episode i is sampled with seed turn_seed(seed, i, t)
    (None: drawn from torch's RNG). On the HF engine both modes and any tool timing give the same episodes (up to
    ~1e-6 rounding, which may flip a near tie); vLLM's bf16 forward depends on the batch: docs/rollouts.md."""
    import queue
    if mode not in ("continuous", "sync"):
        raise ValueError(f"rollout: unknown mode {mode!r} (continuous, sync)")
    tools = tools or tool_protocol("clean")
    if execute is None:
        import sandbox
        execute = sandbox.make_executor(None, tools.memory_mb)
    seed = int(torch.randint(2**62, ())) if seed is None else seed
    im_end, eos = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eps = [Episode(list(p), list(p), [0] * len(p), [0.0] * len(p)) for p in prompt_ids_list]
    limit = getattr(engine, "max_model_len", None) or float("inf")  # a turn cut there would be no overlong cut
    budget = [min(max_response_len, limit - len(p)) for p in prompt_ids_list]  # response tokens, per episode
    if min(budget, default=1) < 1:
        raise ValueError(f"rollout: a prompt leaves no room to respond within the engine's max_model_len {limit}")

    def submit(i):
        engine.submit(i, eps[i].ids, budget[i] - eps[i].response_len, temperature, top_p,
                      turn_seed(seed, i, eps[i].num_turns))

    def sampled(i, new, lps):  # a turn is back from the engine: record it, return True when its tools should run
        ep = eps[i]
        new, lps = list(new[:budget[i] - ep.response_len]), list(lps[:budget[i] - ep.response_len])
        ep.ids += new
        ep.mask += [1] * len(new)
        ep.sampler_logp += lps
        ep.num_turns += 1
        ep.turns.append({"text": tokenizer.decode(new), "calls": [], "observations": [], "status": []})
        if not new or new[-1] not in (im_end, eos):  # cut by the length limit (or the engine's max tokens)
            ep.overlong, ep.finish = ep.response_len >= budget[i], "length"
        elif new[-1] == eos:  # a turn that ends the document ends the episode: nothing to append to
            ep.finish = "answer"
        elif ep.num_turns == max_turns:  # the last turn's calls never run: no turn is left to read their results
            ep.finish = "max_turns" if "<tool_call>" in ep.turns[-1]["text"] else "answer"
        return not ep.finish

    def run_tools(i):  # in the pool: the turn's sandbox calls, then the ids that carry their results back
        res = tool_turn(eps[i].turns[-1]["text"], execute, tools)
        return res, None if res is None or res["end"] else tool_response_ids(tokenizer, res["observations"], tools)

    def tools_back(i, res, obs_ids):  # record a turn's tool results; True when the episode goes on
        ep = eps[i]
        if res is None:
            ep.finish = "answer"
            return False
        ep.turns[-1].update(calls=res["calls"], status=res["status"], observations=res["observations"])
        ep.num_tool_calls += len(res["calls"])
        ep.tool_errors += sum(s not in ("ok", "timeout") for s in res["status"])
        ep.tool_timeouts += res["status"].count("timeout")
        if res["end"]:
            ep.finish = "malformed"
        elif ep.response_len + len(obs_ids) >= budget[i]:  # no room to answer after the tool output
            ep.overlong, ep.finish = True, "length"
        else:
            ep.ids += obs_ids
            ep.mask += [0] * len(obs_ids)
            ep.sampler_logp += [0.0] * len(obs_ids)
        return not ep.finish

    # the threads mostly wait on sandbox processes, and an episode has at most one tool turn out: one per episode
    with ThreadPoolExecutor(max_workers=max(len(eps), 1)) as pool:
        for i in range(len(eps)):
            submit(i)
        done = queue.SimpleQueue()  # (episode, future) of each tool turn as it finishes
        decoding, back, out = len(eps), [], 0  # turns in the engine, turns back from it, tool turns out
        while decoding or back or out:
            if decoding:
                got = engine.poll()
                decoding -= len(got)
                back += [(i, new, lps) for i, new, lps, _ in got]
            if mode == "sync" and decoding:  # the barrier: the round's last turn is still decoding
                continue
            for i, new, lps in sorted(back):
                if sampled(i, new, lps):
                    pool.submit(run_tools, i).add_done_callback(lambda f, i=i: done.put((i, f)))
                    out += 1
            back, ready = [], []
            while out > len(ready) and (not decoding and (mode == "sync" or not ready) or not done.empty()):
                ready.append(done.get())  # blocks only when nothing decodes (sync: until every tool turn is back)
            out -= len(ready)
            for i, f in sorted(ready, key=lambda r: r[0]):
                if tools_back(i, *f.result()):
                    submit(i)
                    decoding += 1
    for ep in eps:
        ep.response_text = tokenizer.decode(ep.ids[len(ep.prompt_ids):])
        assert len(ep.ids) == len(ep.mask) == len(ep.sampler_logp)
    return eps


def retokenize_drift(episodes, tokenizer):
    """Share of episodes whose text would not re-encode to the same ids (what re-rendering would get wrong)."""
    bad = sum(tokenizer.encode(tokenizer.decode(e.ids), add_special_tokens=False) != e.ids for e in episodes)
    return bad / max(len(episodes), 1)

# -----------------------------------------------------------------------------
# Engines


def sample_token(logits, temperature, top_p, u=None):
    """Sample from (B, V) logits: temperature, then the nucleus (the smallest prefix of the sorted probabilities
    whose mass reaches top_p), by inverse CDF on uniforms u (B,) (torch.rand when None); temperature 0 is greedy.
    temperature and top_p are floats or (B,) tensors (kept on the CPU: top_p = 1 everywhere skips the sort, the
    costliest part over a 151,936-token vocabulary on a CPU; the inverse CDF then runs in vocabulary order)."""
    B = logits.shape[0]
    t = torch.as_tensor(temperature, dtype=torch.float32, device=logits.device).expand(B)[:, None]
    probs = torch.softmax(logits.float() / torch.where(t > 0, t, 1.0), -1)
    order = None
    if bool((torch.as_tensor(top_p) < 1).any()):
        p = torch.as_tensor(top_p, dtype=torch.float32, device=logits.device).expand(B)[:, None]
        probs, order = probs.sort(-1, descending=True)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= p, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.rand(B, device=logits.device) if u is None else u.to(logits.device)
    k = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)  # the first k with cdf[k] > u * mass
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1, keepdim=True)
    k = torch.minimum(k, last)  # u * mass rounding up onto the total: the last token of positive probability
    tok = k[:, 0] if order is None else order.gather(-1, k)[:, 0]
    return torch.where(t[:, 0] > 0, tok, logits.argmax(-1))


class Engine:
    """What the agent loop drives. submit(key, ids, max_new_tokens, temperature, top_p, seed) queues one turn;
    poll() advances the engine by one step and returns the turns that finished, [(key, ids, logprobs, finish)]
    with finish "stop" (a stop token ends ids) or "length". Log-probs are those of the raw logits (temperature 1),
    comparable to the trainer's. Sampling while any part of the engine is asleep is an error."""

    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0):
        """One turn per prompt, seeds from torch's global RNG: [(ids, logprobs, finish)] in the prompts' order."""
        for i, p in enumerate(prompts):
            self.submit(i, p, max_new_tokens, temperature, top_p, int(torch.randint(2**62, ())))
        out = {}
        while len(out) < len(prompts):
            out |= {key: tuple(rest) for key, *rest in self.poll()}
        return [out[i] for i in range(len(prompts))]


def checked_weights(named_tensors, params):
    """The (name, tensor) pairs, checked against params {HF name: parameter} (tied names share one parameter): a
    name the engine lacks, a shape mismatch, or, once exhausted, a parameter no name covered is an error."""
    covered = set()
    for name, t in named_tensors:
        if (p := params.get(name)) is None:
            raise KeyError(f"rollout: the engine's model has no parameter {name!r}")
        if p.shape != t.shape:
            raise ValueError(f"rollout: {name} has shape {tuple(t.shape)}, the engine's is {tuple(p.shape)}")
        covered.add(id(p))
        yield name, t
    missing = [n for n, p in params.items() if id(p) not in covered]
    if missing:
        raise KeyError(f"rollout: the weight update left {len(missing)} parameters as they were: {missing[:3]}")


@dataclass
class Turn:  # one turn in the HF engine
    key: object
    ids: list
    max_new: int
    temperature: float
    top_p: float
    gen: torch.Generator
    new: list = field(default_factory=list)
    lps: list = field(default_factory=list)


def pad_left(x, n, dim):
    return torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1 - dim % x.dim()) + (n - x.shape[dim], 0))


class HFEngine(Engine):
    """transformers with a continuous-batching loop of our own: each poll() prefills the newly submitted turns (an
    episode's next turn only past its cached history) and merges them into the running batch, samples one token
    for every running turn (each from its own generator), drops the finished ones and runs one decode step. Left
    padding, explicit position ids; a turn stops at <|im_end|> or eos. On its own copy of the model, or, with
    `share=True`, on `model` itself (a trainer that updates it in place and never shards it): docs/rollouts.md."""

    def __init__(self, model, tokenizer, device="cpu", share=False):
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" names the current GPU, as .to() reads it
            device = torch.device("cuda", torch.cuda.current_device())
        assert not share or model.device == device, f"rollout: a shared model must be on {device}, not {model.device}"
        self.model = (model if share else copy.deepcopy(model).to(device)).eval()
        self.params = dict(self.model.named_parameters(remove_duplicate=False))
        self.device, self.tok = device, tokenizer
        self.stop = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # the KV-cache argument of forward() was renamed past_key_values -> cache within transformers 5.x
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.queue, self.rows, self.asleep, self.waited = [], [], False, 0  # rows: the running turns, in order
        self.saved = {}  # key -> (ids, per-layer (K, V)) of its last finished turn, reused by the key's next turn

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        assert not self.asleep, "rollout: sampling from a sleeping engine (call wake_up first)"
        assert max_new_tokens >= 1 and ids
        self.queue.append(Turn(key, list(ids), max_new_tokens, temperature, top_p, torch.Generator().manual_seed(seed)))

    def forward(self, ids, attn, pos, kv, **kw):
        return self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                          **{self.cache_arg: kv}, **kw).logits[:, -1].float()

    def admit(self):
        """Prefill the queued turns as one batch and merge them into the running batch. A turn that extends its key's
        previous turn (an episode's history) prefills only the new tokens: the rest is in the saved cache."""
        from transformers import DynamicCache
        new, self.queue = self.queue, []
        past = [self.saved.pop(r.key, ([], None)) for r in new]
        past = [(ids, kv) if kv is not None and len(r.ids) > len(ids) and r.ids[:len(ids)] == ids else ([], None)
                for r, (ids, kv) in zip(new, past)]
        P, S = max(len(ids) for ids, _ in past), max(len(r.ids) - len(ids) for r, (ids, _) in zip(new, past))
        ids = torch.full((len(new), S), self.pad, dtype=torch.long)
        attn = torch.zeros((len(new), P + S), dtype=torch.long)
        pos = torch.zeros((len(new), S), dtype=torch.long)
        for b, (r, (done, _)) in enumerate(zip(new, past)):  # row: [pad] [past] [pad] [suffix], padding masked
            n = len(r.ids) - len(done)
            ids[b, S - n:], pos[b, S - n:] = torch.tensor(r.ids[len(done):]), torch.arange(len(done), len(r.ids))
            attn[b, P - len(done):P], attn[b, P + S - n:] = 1, 1
        kv = DynamicCache(config=self.model.config)
        if P:  # the saved caches, left-padded to the longest: a cache given before the forward
            ref = next(c for _, c in past if c)
            for i in range(len(ref)):
                kv.update(*(torch.cat([pad_left(c[i][j] if c else ref[i][j][:, :, :0], P, -2) for _, c in past])
                            for j in (0, 1)), i)
        logits = self.forward(ids.to(self.device), attn.to(self.device), pos.to(self.device), kv, logits_to_keep=1)
        attn, pos = attn.to(self.device), pos[:, -1].to(self.device) + 1
        if self.rows:  # merge into the running batch: both left-padded to the longer one
            n = max(P + S, self.attn.shape[1])
            for a, b in zip(self.kv.layers, kv.layers):
                a.keys = torch.cat([pad_left(a.keys, n, -2), pad_left(b.keys, n, -2)])
                a.values = torch.cat([pad_left(a.values, n, -2), pad_left(b.values, n, -2)])
            self.attn = torch.cat([pad_left(self.attn, n, -1), pad_left(attn, n, -1)])
            self.pos, self.logits = torch.cat([self.pos, pos]), torch.cat([self.logits, logits])
        else:
            self.kv, self.attn, self.pos, self.logits = kv, attn, pos, logits
        self.rows += new

    @torch.no_grad()
    def poll(self):
        # merging copies the whole running cache: admit in groups (a waiting turn waits a few steps at most)
        self.waited = self.waited + 1 if self.queue else 0
        if self.queue and (len(self.queue) * 8 >= len(self.rows) or self.waited > 8):
            self.admit()
        if not self.rows:
            return []
        u = torch.stack([torch.rand((), generator=r.gen) for r in self.rows])
        tok = sample_token(self.logits, torch.tensor([r.temperature for r in self.rows]),
                           torch.tensor([r.top_p for r in self.rows]), u)
        lp = torch.log_softmax(self.logits, -1).gather(-1, tok[:, None])[:, 0]  # raw logits: the trainer's view
        done, keep = [], []
        for b, (r, t, v) in enumerate(zip(self.rows, tok.tolist(), lp.tolist())):
            r.new.append(t)
            r.lps.append(v)
            if t in self.stop or len(r.new) == r.max_new:
                done.append((r.key, r.new, r.lps, "stop" if t in self.stop else "length"))
                if t in self.stop:  # its episode may go on: keep the cache (all but the new token, not fed yet)
                    cols = self.attn[b].nonzero()[:, 0]
                    self.saved[r.key] = (r.ids + r.new[:-1], [(x.keys[b:b + 1, :, cols], x.values[b:b + 1, :, cols])
                                                              for x in self.kv.layers])
                    assert len(cols) == len(self.saved[r.key][0])
            else:
                keep.append(b)
        if len(keep) < len(self.rows):  # finished turns leave the batch, and so do padding columns nobody needs
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.attn = self.attn[idx]
            first = int(self.attn.any(0).long().argmax()) if keep else 0
            self.attn = self.attn[:, first:]
            for layer in self.kv.layers:
                layer.keys, layer.values = layer.keys[idx, :, first:], layer.values[idx, :, first:]
            self.rows, self.pos, tok = [self.rows[b] for b in keep], self.pos[idx], tok[idx]
        if self.rows:
            self.attn = torch.cat([self.attn, self.attn.new_ones(len(self.rows), 1)], 1)
            self.logits = self.forward(tok[:, None], self.attn, self.pos[:, None], self.kv)
            self.pos = self.pos + 1
        return done

    @torch.no_grad()
    def update_weights(self, named_tensors):
        """Full tensors by HF name (any device, float dtype), copied one by one; a tied lm_head.weight may be absent."""
        assert not self.queue and not self.rows, "rollout: weights changed while turns are in flight"
        self.saved = {}  # the saved caches were computed by the old weights
        for name, t in checked_weights(named_tensors, self.params):
            if t.data_ptr() != self.params[name].data_ptr():  # a shared model's own tensor: already in place
                self.params[name].copy_(t)

    def sleep(self):  # nothing to release; tracked so that sampling while asleep fails here as it does on vLLM
        assert not self.queue and not self.rows, "rollout: sleep() with turns in flight would lose them"
        self.asleep, self.saved = True, {}

    def wake_up(self):
        self.asleep = False


class VLLMEngine(Engine):
    """vLLM 0.33 in the trainer's process (engine core in process), asleep while the trainer works; under torchrun
    one engine per rank (`external_launcher`), built by every rank at the same point (collective). Its start-up
    reseeds python/numpy/torch and sets torch to one thread (both undone here) and freezes the GC. Turns go in by
    `add_request`, come out of `step()` once finished; log-probs: the raw log-softmax of fp32 logits; `sleep()` drops
    the weights (level 2: the next push writes them all) and the KV cache. Sources, details: docs/rollouts.md."""

    def __init__(self, model_path, tokenizer, seed=0, gpu_memory_utilization=0.75, max_model_len=23040):
        import numpy as np
        import torch.distributed as dist
        from transformers import AutoConfig, AutoModelForCausalLM
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: weights reachable
        from vllm import LLM
        kept = random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads()
        self.llm = LLM(model=model_path, dtype="bfloat16", seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, enable_sleep_mode=True, enable_prefix_caching=True,
                       logprobs_mode="raw_logprobs", generation_config="vllm",  # no sampling defaults from the model
                       hf_overrides={"head_dtype": "float32"},  # logits in fp32, as the trainer's (default: bf16)
                       distributed_executor_backend="external_launcher" if dist.is_initialized() else None)
        random.setstate(kept[0]), np.random.set_state(kept[1]), torch.set_rng_state(kept[2])  # undo vLLM's reseed
        torch.set_num_threads(kept[3])  # and its one thread: the trainer's CPU work (advantages, stats)
        with torch.device("meta"):  # the names and shapes load_weights accepts: the HF model's, built without memory
            ref = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
        self.params = dict(ref.named_parameters(remove_duplicate=False))
        self.stop = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        # which of "weights", "kv_cache" are released; request id -> key; requests submitted so far (unique ids)
        self.asleep, self.pending, self.requests = set(), {}, 0
        self.device, self.max_model_len = "cuda", max_model_len  # where pushed weights go; what rollout() fits in

    def submit(self, key, ids, max_new_tokens, temperature, top_p, seed):
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind, SamplingParams
        assert not self.asleep, f"rollout: sampling while vLLM's {sorted(self.asleep)} sleep (call wake_up first)"
        sp = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed, logprobs=0,
                            flat_logprobs=True, stop_token_ids=self.stop, skip_special_tokens=False, detokenize=False,
                            output_kind=RequestOutputKind.FINAL_ONLY)
        rid, self.requests = f"turn-{self.requests}", self.requests + 1
        self.llm.llm_engine.add_request(rid, tokens_input(list(ids)), sp)
        self.pending[rid] = key

    def poll(self):
        out = []
        for o in self.llm.llm_engine.step():  # FINAL_ONLY: finished requests only, each with its whole output
            c = o.outputs[0]
            if c.finish_reason not in ("stop", "length"):  # abort, error, repetition (v1/engine/__init__.py)
                raise RuntimeError(f"rollout: vLLM turn {o.request_id} finished with {c.finish_reason!r}")
            lps = [c.logprobs.logprobs[i] for i in c.logprobs.start_indices]  # each position's first: the sampled
            out.append((self.pending.pop(o.request_id), list(c.token_ids), lps, c.finish_reason))
        return out

    def update_weights(self, named_tensors):
        """Full tensors by HF name, converted to bf16 on this GPU one at a time as vLLM's loader pulls them."""
        assert not self.pending, "rollout: weights changed while turns are in flight"
        if "weights" in self.asleep:  # woken empty (slept at level 2): the push below writes every parameter
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        weights = ((k, v.to(self.device, torch.bfloat16, non_blocking=True))
                   for k, v in checked_weights(named_tensors, self.params))
        self.llm.apply_model(lambda model: model.load_weights(weights))  # vLLM's loader reads them all
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights

    def sleep(self):
        assert not self.pending, "rollout: sleep() with turns in flight would abort them"
        self.llm.sleep(level=2)  # level 1 would copy the weights to host memory and back, for the push to overwrite
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self):  # idempotent; wakes whatever still sleeps (the KV cache alone after a weight update)
        if self.asleep:
            assert "weights" not in self.asleep, "rollout: vLLM dropped its weights: push them (update_weights) first"
            if not self.llm.wake_up(tags=sorted(self.asleep)):
                raise RuntimeError(f"rollout: vLLM did not wake fully from {sorted(self.asleep)}")
            self.asleep = set()


def make_engine(backend, model_path, tokenizer, model=None, seed=0, gpu_memory_utilization=0.75,
                max_model_len=23040, share=False):
    """backend hf, vllm, or auto (vLLM on CUDA when it is installed, else transformers). Prints the choice. The HF
    engine samples from `model` (copied unless `share`) or loads `model_path`; vLLM always loads `model_path`."""
    why = "asked for"
    if backend == "auto":
        import importlib.util
        backend = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
        why = "auto: CUDA and vllm present" if backend == "vllm" else "auto: no CUDA or no vllm installed"
    if backend not in ("hf", "vllm"):
        raise SystemExit(f"rollout: unknown backend {backend!r} (auto, hf, vllm)")
    if backend == "vllm" and not torch.cuda.is_available():
        raise SystemExit("rollout: the vllm backend needs CUDA; use --backend hf")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"rollout: {backend} engine ({why}){'' if backend == 'vllm' else ' on ' + device}", flush=True)
    if backend == "vllm":
        return VLLMEngine(model_path, tokenizer, seed, gpu_memory_utilization, max_model_len)
    return HFEngine(models.load_model(model_path)[0] if model is None else model, tokenizer, device, share=share)

# -----------------------------------------------------------------------------
# Command line: roll out a few toy problems and print them


@dataclass
class Config:
    model: str = "toy:tiny"  # HF model dir / Hub id / run dir / toy:<size> (a random tiny model)
    backend: str = "auto"  # auto | hf | vllm
    n: int = 2  # toy problems to roll out
    max_turns: int = 4  # assistant turns per episode
    max_response_len: int = 256  # response tokens per episode (tool output included)
    max_obs_chars: int = 2048  # characters of tool output shown to the model
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass
    seed: int = 0  # problems and sampling
    sandbox_url: str = "local"  # local | http(s)://host:port of a SandboxFusion server
    mode: str = "continuous"  # continuous | sync (turn-synchronous)
    threads: int = 0  # CPU intra-op threads; 0 = the cores idle at start (common.set_threads)


def main(argv=None):
    import sandbox
    import toy
    cfg = common.parse_config(Config, argv)
    common.set_threads(cfg.threads)  # (no global seed: the model and every turn's sampling are seeded on their own)
    model, tok = models.load_model(cfg.model)
    engine = make_engine(cfg.backend, cfg.model, tok, model=model, seed=cfg.seed,
                         max_model_len=1024 + cfg.max_response_len)
    problems = toy.toy_problems(cfg.n, cfg.seed)
    prompts = [tok.apply_chat_template(p["prompt_messages"], tools=p["tools"], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for p in problems]
    eps = rollout(engine, tok, prompts, max_turns=cfg.max_turns, max_response_len=cfg.max_response_len,
                  tools=tool_protocol("clean", max_chars=cfg.max_obs_chars), temperature=cfg.temperature,
                  top_p=cfg.top_p, execute=sandbox.make_executor(cfg.sandbox_url), mode=cfg.mode, seed=cfg.seed)
    for p, ep in zip(problems, eps):
        print(f"\n=== {p['question']} (answer {p['ground_truth']}) | {ep.num_turns} turns, {ep.num_tool_calls} calls "
              f"({ep.tool_errors} errors), {ep.response_len} tokens, finish {ep.finish}\n{ep.response_text}")
    print(f"\nre-tokenization drift: {retokenize_drift(eps, tok):.2f} of episodes")


if __name__ == "__main__":
    main()
