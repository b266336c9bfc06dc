"""A stand-in for the vllm package (0.33.0) where rollout.VLLMEngine touches it: there is no vLLM and no GPU here, so
the engine's calls are tested against this. Each behaviour names the file of vLLM 0.33.0's wheel it copies (paths
under vllm/). Turns are scripted, not sampled: `policy(prompt_ids, params) -> text` (default: a tool call in the first
two assistant turns, then an answer, each a function of the turn's seed); their log-probs are the model's.

    fake = FakeVLLM(tok, model)   # model: the HF model vLLM would load (the fake runs a copy of it)
    fake.install(monkeypatch)     # tests; a subprocess calls fake.install() without one
"""
import copy
import dataclasses
import enum
import gc
import math
import os
import random
import sys
import types

import numpy as np
import torch

CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "%s"}}\n</tool_call>'


class VLLMError(Exception):  # exceptions.py:10-28: the chain is VLLMValidationError -> VLLMClientError -> VLLMError
    pass                     # -> Exception; none of them is a ValueError


class VLLMClientError(VLLMError):
    pass


class VLLMValidationError(VLLMClientError):
    pass


class RequestOutputKind(enum.Enum):  # sampling_params.py:208-214
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


# sampling_params.py:271-420: SamplingParams is a msgspec.Struct with these fields (and defaults), among others the
# stand-in has no use for; a field it does not list is one it does not implement, so it is refused like a typo
FIELDS = dict(n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, temperature=1.0, top_p=1.0,
              top_k=0, min_p=0.0, seed=None, stop=None, stop_token_ids=None, ignore_eos=False, max_tokens=16,
              min_tokens=0, logprobs=None, prompt_logprobs=None, flat_logprobs=False, detokenize=True,
              skip_special_tokens=True, spaces_between_special_tokens=True, include_stop_str_in_output=False,
              output_kind=RequestOutputKind.CUMULATIVE)


class SamplingParams:
    def __init__(self, **kw):
        for k in kw:  # msgspec: an unknown keyword is a TypeError at construction (measured with msgspec 0.23)
            if k not in FIELDS:
                raise TypeError(f"Unexpected keyword argument {k!r}")
        self.__dict__.update(FIELDS | kw)
        # __post_init__ (sampling_params.py:559-603): seed -1 means none, stop ids de-duplicated, then the checks
        self.seed = None if self.seed == -1 else self.seed
        self.stop_token_ids = list(dict.fromkeys(self.stop_token_ids or []))
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        checks = [  # _verify_args (sampling_params.py:634-745), the checks on fields we set
            (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 2.0,
             f"temperature must be in [0, 2], got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (self.top_k >= -1, f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}."),
            (self.max_tokens is None or self.max_tokens >= 1,
             f"max_tokens must be at least 1, got {self.max_tokens}."),
            (self.logprobs is None or self.logprobs >= -1,
             f"logprobs must be non-negative or -1, got {self.logprobs}."),
            (all(isinstance(t, int) for t in self.stop_token_ids),
             f"stop_token_ids must contain only integers, got {self.stop_token_ids}."),
            (not self.stop or self.detokenize, "stop strings are only supported when detokenize is True."),
        ]
        for ok, message in checks:
            if not ok:
                raise VLLMValidationError(message)


@dataclasses.dataclass
class Logprob:  # logprobs.py:18-22
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclasses.dataclass
class FlatLogprobs:
    """logprobs.py:31-61: plain lists, position i at [start_indices[i], end_indices[i]) with the sampled token first
    (v1/engine/logprobs.py:110-122). Indexing or iterating builds a dict and a Logprob per position again
    (logprobs.py:109-155), which the flat form exists to avoid: counted in `fake.materialised`."""
    start_indices: list = dataclasses.field(default_factory=list)
    end_indices: list = dataclasses.field(default_factory=list)
    token_ids: list = dataclasses.field(default_factory=list)
    logprobs: list = dataclasses.field(default_factory=list)
    ranks: list = dataclasses.field(default_factory=list)
    decoded_tokens: list = dataclasses.field(default_factory=list)
    fake: object = dataclasses.field(default=None, repr=False, compare=False)

    def __len__(self):
        return len(self.start_indices)

    def __getitem__(self, i):
        self.fake.materialised += 1
        s, e = self.start_indices[i], self.end_indices[i]
        return {t: Logprob(lp, r, d) for t, lp, r, d in zip(self.token_ids[s:e], self.logprobs[s:e], self.ranks[s:e],
                                                             self.decoded_tokens[s:e])}

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# the LLM(...) arguments the stand-in implements (entrypoints/llm.py:146-323 and EngineArgs take more; any other is
# refused, as EngineArgs refuses a name it lacks)
LLM_ARGS = {"model", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enable_sleep_mode",
            "enable_prefix_caching", "logprobs_mode", "generation_config", "distributed_executor_backend",
            "tensor_parallel_size", "hf_overrides"}
# model_executor/models/qwen2.py:325-333 (Qwen3Model inherits it): HF names -> vLLM's fused parameter and its shard
STACKED = {".q_proj": (".qkv_proj", "q"), ".k_proj": (".qkv_proj", "k"), ".v_proj": (".qkv_proj", "v"),
           ".gate_proj": (".gate_up_proj", 0), ".up_proj": (".gate_up_proj", 1)}


def vllm_name(hf_name):
    for old, (new, shard) in STACKED.items():
        if old in hf_name:
            return hf_name.replace(old, new), shard
    return hf_name, None


def seeded_policy(tok):
    """A tool call in each of the first two assistant turns, then an answer; the numbers come from the turn's seed."""
    def policy(ids, sp):
        turn = tok.decode(ids).count("<|im_start|>assistant")
        return (CALL % f"print({sp.seed % 1000})" if turn < 3 else f"\\boxed{{{sp.seed % 7}}}") + "<|im_end|>"
    return policy


class FakeVLLM:
    def __init__(self, tok, model, policy=None):
        self.tok, self.base, self.policy = tok, model, policy or seeded_policy(tok)
        self.log, self.params, self.requests, self.loaded = [], [], {}, []  # params: every SamplingParams submitted
        self.asleep, self.paused, self.level, self.uninitialised = set(), False, None, set()
        self.aborted = self.materialised = self.prefix_cache_resets = 0
        self.force_finish = None  # a finish_reason to report instead of the real one ("abort", "error", ...)
        self.modules = {"vllm": types.ModuleType("vllm"), "vllm.inputs": types.ModuleType("vllm.inputs"),
                        "vllm.sampling_params": types.ModuleType("vllm.sampling_params"),
                        "vllm.exceptions": types.ModuleType("vllm.exceptions"),
                        "vllm.logprobs": types.ModuleType("vllm.logprobs")}
        self.modules["vllm"].LLM = self.make_llm_class()
        self.modules["vllm.inputs"].tokens_input = lambda ids: {"type": "token", "prompt_token_ids": ids}
        self.modules["vllm.sampling_params"].SamplingParams = SamplingParams
        self.modules["vllm.sampling_params"].RequestOutputKind = RequestOutputKind
        self.modules["vllm.exceptions"].VLLMValidationError = VLLMValidationError
        self.modules["vllm.logprobs"].FlatLogprobs = FlatLogprobs

    def install(self, monkeypatch=None):
        for name, mod in self.modules.items():
            monkeypatch.setitem(sys.modules, name, mod) if monkeypatch else sys.modules.__setitem__(name, mod)

    def make_llm_class(fake):
        class Engine:  # llm.llm_engine (v1/engine/llm_engine.py), engine core in process
            def add_request(self, request_id, prompt, params):
                ids, limit = prompt["prompt_token_ids"], fake.kw["max_model_len"]
                assert prompt["type"] == "token" and isinstance(params, SamplingParams)
                assert request_id not in fake.requests, "a request id must be unique among those in flight"
                # v1/engine/input_processor.py:557-602, in the caller's thread before anything is queued
                if len(ids) > limit:
                    raise VLLMValidationError(f"The decoder prompt (length {len(ids)}) is longer than the maximum "
                                              f"model length of {limit}. Make sure that `max_model_len` is no "
                                              "smaller than the number of text tokens.")
                if len(ids) == limit:
                    raise VLLMValidationError(f"The decoder prompt (length {len(ids)}) plus the number of requested "
                                              f"output tokens (at least 1) is longer than the maximum model length "
                                              f"of {limit}.")
                # while paused or asleep the in-process engine queues the request and never schedules it (core.py:
                # 518-560, v1/core/sched/scheduler.py:1064-1067); only the multiprocess EngineCoreProc rejects it
                fake.params.append(params)
                fake.log.append(("add", request_id, params.seed))
                fake.requests[request_id] = [list(ids), params, len(ids) % 3 + 1]  # finishes after 1-3 steps

            def step(self):
                if fake.paused or fake.asleep:  # nothing is scheduled: no output at all (scheduler.py:3147-3155,
                    return []                   # core.py:667-676, core_client.py:398-401)
                if fake.uninitialised:  # stand-in only: vLLM would sample from whatever the fresh memory held
                    raise RuntimeError(f"fake vLLM: sampling with {len(fake.uninitialised)} weights never loaded "
                                       "since they woke from a level-2 sleep")
                out = []
                for rid, r in list(fake.requests.items()):
                    r[2] -= 1
                    if r[2] == 0:  # FINAL_ONLY: a request yields output only once finished (output_processor.py:364)
                        del fake.requests[rid]
                        out.append(fake.finish(rid, *r[:2]))
                return out

        class Model:  # what apply_model's function receives: load_weights as model_executor/models/utils.py:431-503
            def load_weights(self, weights):
                params, done, skipped = dict(fake.model.named_parameters()), set(), False
                for name, w in weights:
                    fake.loaded.append((name, w.dtype, w.device.type))
                    if name == "lm_head.weight" and fake.model.config.tie_word_embeddings:
                        skipped = True  # an alias of model.embed_tokens.weight (utils.py:255-259)
                        continue
                    new, shard = vllm_name(name)
                    if name not in params:
                        if name.endswith(".bias"):  # unexpected biases are ignored (utils.py:458)
                            continue
                        raise ValueError(f"There is no module or parameter named {new!r} in Qwen3ForCausalLM")
                    params[name].data.copy_(w)  # into its shard of the fused tensor; here the HF tensor is the shard
                    fake.uninitialised.discard((new, shard))
                    done.add(new)
                if skipped and "model.embed_tokens.weight" not in done:  # utils.py:480-503
                    raise ValueError("'lm_head.weight' was skipped because it is tied to 'model.embed_tokens.weight' "
                                     "in Qwen3ForCausalLM, but it was not found in the checkpoint, so the tied weight "
                                     "is uninitialized.")
                return done

        class LLM:
            def __init__(self, **kw):
                if set(kw) - LLM_ARGS:
                    raise TypeError(f"unexpected keyword argument {sorted(set(kw) - LLM_ARGS)[0]!r}")
                if kw.get("distributed_executor_backend") == "external_launcher":
                    # v1/executor/uniproc_executor.py:178-207: engine core in process only; RANK and LOCAL_RANK
                    # from the launcher; an all_reduce over the world at start-up, so every rank constructs together
                    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0", \
                        "To get deterministic execution, please set VLLM_ENABLE_V1_MULTIPROCESSING=0"
                    int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
                    torch.distributed.barrier()
                # utils/torch_utils.py:528-539 (gpu_worker.py:517 and again after warm-up): the process is reseeded
                random.seed(kw["seed"])
                np.random.seed(kw["seed"])
                torch.manual_seed(kw["seed"])
                if "OMP_NUM_THREADS" not in os.environ:  # utils/torch_utils.py:255-283 (gpu_worker.py:617)
                    torch.set_num_threads(1)
                gc.collect()  # utils/gc_utils.py:120-131 (core.py:243): everything alive now is never collected again
                gc.freeze()
                fake.kw, self.llm_engine = kw, Engine()
                fake.model = copy.deepcopy(fake.base).eval()  # vLLM loads its own copy
                fake.names = {vllm_name(n) for n in dict(fake.model.named_parameters())}
                # config/model.py:2107-2134: the lm_head runs in the model dtype (bf16) unless head_dtype says fp32
                fake.fp32_head = (kw.get("hf_overrides") or {}).get("head_dtype") in ("float32", torch.float32)

            def sleep(self, level=1, mode="abort"):  # entrypoints/llm.py:839-862 -> v1/engine/core.py:993-1029
                fake.log.append(("sleep", level))
                fake.aborted += len(fake.requests)  # pause_scheduler(mode="abort"): in-flight requests end
                fake.requests.clear()
                fake.paused = True
                if level >= 1:  # clear_cache=level >= 1: the prefix cache is reset (core.py:932-953)
                    fake.prefix_cache_resets += 1
                    if "weights" not in fake.asleep:  # v1/executor/abstract.py:400-410
                        fake.asleep, fake.level = {"weights", "kv_cache"}, level

            def wake_up(self, tags=None):  # v1/engine/core.py:1031-1068 -> v1/executor/abstract.py:412-421
                fake.log.append(("wake_up", tags))
                tags = None if tags is None else [t for t in tags if t != "scheduling"]
                if fake.asleep and (tags is None or tags) and all(t in fake.asleep for t in tags or ()):
                    woken = set(fake.asleep) if tags is None else set(tags)
                    if "weights" in woken and fake.level == 2:  # gpu_worker.py:301-357: level 2 dropped them;
                        for p in fake.model.parameters():        # fresh, uninitialised memory is mapped back
                            p.data.fill_(float("nan"))
                        fake.uninitialised = set(fake.names)
                    fake.asleep -= woken
                # (a tag that is not asleep: a warning, and nothing is woken at all)
                if not fake.asleep:  # the scheduler resumes only once everything is resident
                    fake.paused = False
                return not fake.asleep

            def apply_model(self, fn):  # entrypoints/llm.py: collective_rpc on each worker's model
                if "weights" in fake.asleep:
                    raise RuntimeError("fake vLLM: apply_model while the weights sleep (unmapped memory)")
                return [fn(Model())]

            def reset_prefix_cache(self):
                fake.log.append(("reset_prefix_cache",))
                fake.prefix_cache_resets += 1

        return LLM

    def finish(self, rid, ids, sp):
        """The finished RequestOutput of one request: the policy's text, cut as the scheduler cuts it."""
        assert sp.output_kind == RequestOutputKind.FINAL_ONLY, "the stand-in implements FINAL_ONLY only"
        text = self.policy(ids, sp)
        new, reason = self.tok.encode(text, add_special_tokens=False), "length"
        assert new[-1] in sp.stop_token_ids, f"a scripted turn ends with a stop token: {text!r}"
        # v1/core/sched/utils.py:98-119: a stop token first, then max_tokens or max_model_len, whichever comes first
        cap = min(sp.max_tokens, self.kw["max_model_len"] - len(ids))
        for j, t in enumerate(new[:cap]):
            if t in sp.stop_token_ids:
                new, reason = new[:j + 1], "stop"
                break
        else:
            new = new[:cap]
        logprobs = None
        if sp.logprobs is not None:  # logprobs_mode="raw_logprobs": the log-softmax of the raw logits
            with torch.no_grad():
                logits = self.model(torch.tensor([ids + new])).logits[0, len(ids) - 1:-1].float()
            if not self.fp32_head:
                logits = logits.bfloat16().float()
            lp = torch.log_softmax(logits, -1)
            chosen = lp.gather(-1, torch.tensor(new)[:, None])[:, 0]
            ranks = ((lp > chosen[:, None]).sum(-1) + 1).tolist()
            n = len(new)
            if sp.flat_logprobs:  # logprobs.py:173-196
                logprobs = FlatLogprobs(list(range(n)), list(range(1, n + 1)), list(new), chosen.tolist(), ranks,
                                        [None] * n, fake=self)
            else:  # a dict and a Logprob per position (logprobs.py:198-209)
                logprobs = [{t: Logprob(v, r)} for t, v, r in zip(new, chosen.tolist(), ranks)]
        c = types.SimpleNamespace(index=0, text="", token_ids=new, logprobs=logprobs,
                                  finish_reason=self.force_finish or reason)
        # request_id: the caller's own id (input_processor.py:354-371)
        return types.SimpleNamespace(request_id=rid, finished=True, outputs=[c])
