"""Rollouts: the tool-integrated-reasoning agent loop and the engines that sample for it.

An episode is built token-in, token-out: the prompt ids from the chat template, then each assistant turn's ids
exactly as sampled (mask 1, with the sampler's log-probs), then the ids of the tool-response turn (mask 0), which
come from rendering the chat template once and taking the suffix. History is never re-rendered, so the ids the
student sampled are the ids the student, the teacher and the loss see.

Engines share one interface, `generate(prompts, max_new_tokens, temperature, top_p) -> [(ids, logprobs, finish)]`:
`HFEngine` (transformers with a KV cache; CPU or GPU) and `VLLMEngine` (vLLM's offline `LLM` colocated with the
trainer, CUDA only, imported lazily). The log-probs are those of the raw logits (temperature 1), comparable to the
trainer's.

    python rollout.py --model out/toy_sft --n 4        # roll out a few toy problems with a trained model, print them
    python rollout.py --model Qwen/Qwen3-0.6B --backend vllm --n 2 --max_response_len 4096   # on one GPU
"""

import copy
import inspect
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

import common
import data

# -----------------------------------------------------------------------------
# Tool calls


def parse_tool_calls(text):
    """Hermes tool calls in an assistant turn -> [{"name", "arguments"}] or {"error": why} per malformed call, which
    the model gets back as the tool response; [] when the turn calls nothing."""
    calls = []
    for m in re.finditer(r"<tool_call>(.*?)(</tool_call>|$)", text, re.S):
        body, closed = m.group(1).strip(), m.group(2)
        if not closed:
            calls.append({"error": "unclosed <tool_call> tag: close every call with </tool_call>"})
            continue
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append({"error": f"the tool call is not valid JSON ({e.msg} at char {e.pos})"})
            continue
        if not isinstance(obj, dict):
            calls.append({"error": 'a tool call must be a JSON object {"name": ..., "arguments": {...}}'})
            continue
        if obj.get("name") != data.TOOL_NAME:
            calls.append({"error": f"unknown tool {obj.get('name')!r}; the only tool is {data.TOOL_NAME!r}"})
            continue
        args = obj.get("arguments")
        if isinstance(args, str):  # some models send the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            calls.append({"error": 'the "arguments" of a tool call must be a JSON object like {"code": "..."}'})
        elif not isinstance(args.get("code"), str):
            calls.append({"error": 'code_interpreter needs a string argument "code"'})
        else:
            calls.append({"name": data.TOOL_NAME, "arguments": {"code": args["code"]}})
    return calls


@dataclass(frozen=True)
class ToolProtocol:
    """How tool calls are run and answered (DESIGN §4). "paper" is the original recipe, quirks included (the files
    named below are the original's); "clean" is what we would design without history (the toy's default)."""
    name: str = "clean"  # paper | clean
    max_chars: int = 2048  # characters of tool output the model reads back per call
    timeout: float = 10.0  # seconds per call
    memory_mb: int = 2048  # per call (the caller builds its executor with it)
    max_calls: int = 0  # calls run per assistant turn, in order (0 = all)


PROTOCOLS = {  # paper: sandbox_fusion_tool_config.yaml (60 s, 2048 MB), rollout.yaml (256 chars, 1 call per turn)
    "paper": dict(max_chars=256, timeout=60.0, memory_mb=2048, max_calls=1),
    "clean": dict(max_chars=2048, timeout=10.0, memory_mb=2048, max_calls=0),
}


def tool_protocol(name="clean", **overrides):
    """The ToolProtocol `name` with some fields overridden (None leaves the protocol's value)."""
    if name not in PROTOCOLS:
        raise SystemExit(f"tools: unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return ToolProtocol(name, **(PROTOCOLS[name] | {k: v for k, v in overrides.items() if v is not None}))


# Fixed reply texts of the paper protocol, verbatim from verl/tools/sandbox_fusion_tools.py (a program that did not
# run to its end) and verl/experimental/agent_loop/tool_agent_loop.py (a call it could not make).
PAPER_NO_OUTPUT = "no stdout here"
PAPER_CALL_ERROR = "Error when executing tool: {}"
PAPER_CUT = "...(truncated)..."


def paper_code(code):
    """The code the original runs (recipe/demystify/reward.py CustomSandboxFusionTool): the first ```python block
    when there is one, then the last non-empty line wrapped in print(...) unless it starts with "print", textually
    (so a last line `x = 5` becomes a SyntaxError the model reads back)."""
    blocks = re.findall(r"```python(.*?)```", code, re.S)
    lines = (blocks[0].strip() if blocks else code).split("\n")
    for i in reversed(range(len(lines))):
        if lines[i] != "":
            lines[i] = lines[i] if lines[i].startswith("print") else f"print({lines[i]})"
            break
    return "\n".join(lines)


def _paper_turn(text, execute, proto):
    """The original's hermes parsing and call (tool_parser.py, tool_agent_loop.py): calls whose JSON or name /
    arguments keys fail are dropped; none left ends the episode; only the first max_calls run; a call the tool
    cannot make (unknown name, arguments without a string "code") is answered with the error's text."""
    if "<tool_call>" not in text or "</tool_call>" not in text:
        return None
    parsed, dropped = [], 0
    for body in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S):
        try:
            obj = json.loads(body)
            parsed.append({"name": obj["name"], "arguments": obj["arguments"]})
        except Exception:  # the original drops the call whatever went wrong (not JSON, not a dict, a missing key)
            dropped += 1
    if not parsed:
        return {"calls": [{"error": "unparsable tool call"}] * dropped, "status": ["malformed"] * dropped,
                "observations": [], "end": True}
    calls, status, obs = parsed[:proto.max_calls or None], [], []
    for c in calls:
        try:
            if c["name"] != data.TOOL_NAME:
                raise KeyError(c["name"])  # the original looks the name up in its dict of tools
            code = c["arguments"]["code"]
            res = execute(paper_code(code), proto.timeout, echo=False)
            status.append(res.status)
            text = res.stdout + res.stderr if res.status in ("ok", "error", "memory") else PAPER_NO_OUTPUT
        except Exception as e:  # the same Python errors the original's tool raises on bad arguments
            status.append("malformed")
            text = PAPER_CALL_ERROR.format(e)
        if len(text) > proto.max_chars:
            half = proto.max_chars // 2
            text = text[:half] + PAPER_CUT + text[-half:]
        obs.append(text)
    return {"calls": calls, "status": status, "observations": obs, "end": False}


def observation(call, result, max_chars):
    """The text the model reads back for one call under "clean"; `result` is a sandbox ExecResult (None for
    malformed calls)."""
    if "error" in call:
        text = f"Error: {call['error']}"
    elif result.status == "ok":
        text = result.stdout.rstrip() or "(no output)"
    elif result.status == "timeout":
        text = result.stdout + f"\nTimeoutError: the code ran longer than the time limit ({result.elapsed_s:.0f}s)"
    else:
        text = (result.stdout + "\n" + result.stderr).strip() or f"Error: execution {result.status}"
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n... [truncated {len(text) - max_chars} characters]"
    return text


def tool_turn(text, execute, proto):
    """Run the tool calls of one assistant turn under `proto`. None when the turn calls no tool (the episode ends
    with its answer); else {"calls", "status" (ok | error | timeout | memory | killed | malformed), "observations"
    (one reply per call run), "end" (the episode ends now: a paper turn whose calls all fail to parse)}.
    `execute(code, timeout, echo=...)` is a sandbox executor; thread-safe, so many turns may run at once."""
    if proto.name == "paper":
        return _paper_turn(text, execute, proto)
    calls = parse_tool_calls(text)[:proto.max_calls or None]
    if not calls:
        return None

    def run(c):  # clean: an AST echo of a final bare expression; malformed calls get an error reply
        return None if "error" in c else execute(c["arguments"]["code"], proto.timeout, echo=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, calls))
    return {"calls": calls, "status": ["malformed" if r is None else r.status for r in results],
            "observations": [observation(c, r, proto.max_chars) for c, r in zip(calls, results)], "end": False}


def tool_response_ids(tok, contents, proto):
    """Token ids that follow an assistant turn's <|im_end|> and carry `contents` back as tool messages, up to the
    next assistant generation prompt. clean: the suffix the full template renders (from the newline after
    <|im_end|>), by diffing two renders of a dummy chat (the prefix property: the longer render must extend the
    shorter one token for token). paper: the tool messages rendered on their own, as the original's agent loop does
    (tool_agent_loop.py), so without that newline."""
    tools = [{"role": "tool", "content": c} for c in contents]
    if proto.name == "paper":
        empty = tok.apply_chat_template([{}], tokenize=True, return_dict=False)  # the original's "system prompt"
        return tok.apply_chat_template(tools, add_generation_prompt=True, tokenize=True, return_dict=False)[len(empty):]
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    base = tok.apply_chat_template(chat, tokenize=True, return_dict=False)
    full = tok.apply_chat_template(chat + tools, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert full[:len(base)] == base, "chat template breaks the prefix property: cannot append tool turns by ids"
    end = max(i for i, t in enumerate(base) if t == tok.convert_tokens_to_ids("<|im_end|>"))
    return full[end + 1:]

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
        out, k, prev = [], -1, 0
        for m in self.mask:
            k += m and not prev
            out.append(k if m else -1)
            prev = m
        return out


def rollout(engine, tokenizer, prompt_ids_list, *, max_turns, max_response_len, temperature=1.0, top_p=1.0,
            execute=None, tools=None, mode="continuous"):
    """One episode per prompt. Each turn, every active episode is sampled in one engine call, then all their tool
    turns run concurrently (`tools`: a ToolProtocol, None = "clean"); an episode ends on a turn without a tool call
    (its answer), on a turn the protocol ends (malformed), at max_turns, or when the response reaches
    max_response_len tokens (overlong). This loop is turn-synchronous whatever `mode` ("continuous" | "sync")."""
    if mode not in ("continuous", "sync"):
        raise ValueError(f"rollout: mode must be continuous or sync, not {mode!r}")
    tools = tools or tool_protocol("clean")
    if execute is None:
        import sandbox
        execute = sandbox.make_executor(None, tools.memory_mb)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eps = [Episode(list(p), list(p), [0] * len(p), [0.0] * len(p)) for p in prompt_ids_list]
    active = list(range(len(eps)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        for turn in range(max_turns):
            if not active:
                break
            outs = engine.generate([eps[i].ids for i in active], max(max_response_len - eps[i].response_len
                                                                     for i in active), temperature, top_p)
            pending = []
            for i, (new, lps, _finish) in zip(active, outs):
                ep, budget = eps[i], max_response_len - eps[i].response_len
                new, lps = list(new[:budget]), list(lps[:budget])
                ep.ids += new
                ep.mask += [1] * len(new)
                ep.sampler_logp += lps
                ep.num_turns += 1
                text = tokenizer.decode(new)
                ep.turns.append({"text": text, "calls": [], "observations": [], "status": []})
                if not new or new[-1] not in (im_end, eos):  # cut by the length limit (or the engine's max tokens)
                    ep.overlong, ep.finish = ep.response_len >= max_response_len, "length"
                    continue
                if new[-1] == eos:  # a turn that ends the document ends the episode: nothing to append to
                    ep.finish = "answer"
                elif turn == max_turns - 1:
                    ep.finish = "max_turns" if parse_tool_calls(text) else "answer"
                else:
                    pending.append((i, pool.submit(tool_turn, text, execute, tools)))
            active = []
            for i, fut in pending:
                ep, res = eps[i], fut.result()
                if res is None:
                    ep.finish = "answer"
                    continue
                for c, status in zip(res["calls"], res["status"]):
                    ep.num_tool_calls += 1
                    ep.tool_errors += status not in ("ok", "timeout")
                    ep.tool_timeouts += status == "timeout"
                    ep.turns[-1]["calls"].append(c)
                    ep.turns[-1]["status"].append(status)
                ep.turns[-1]["observations"] = res["observations"]
                if res["end"]:
                    ep.finish = "malformed"
                    continue
                obs_ids = tool_response_ids(tokenizer, res["observations"], tools)
                if ep.response_len + len(obs_ids) >= max_response_len:  # no room to answer after the tool output
                    ep.overlong, ep.finish = True, "length"
                    continue
                ep.ids += obs_ids
                ep.mask += [0] * len(obs_ids)
                ep.sampler_logp += [0.0] * len(obs_ids)
                active.append(i)
    for ep in eps:
        ep.response_text = tokenizer.decode(ep.ids[len(ep.prompt_ids):])
        assert len(ep.ids) == len(ep.mask) == len(ep.sampler_logp)
    return eps


def retokenize_drift(episodes, tokenizer):
    """Share of episodes whose text would not re-encode to the same ids: what a re-rendering pipeline would
    silently get wrong (and this one avoids by never re-rendering)."""
    bad = sum(tokenizer.encode(tokenizer.decode(e.ids), add_special_tokens=False) != e.ids for e in episodes)
    return bad / max(len(episodes), 1)

# -----------------------------------------------------------------------------
# Engines


def sample_token(logits, temperature, top_p):
    """Sample from (B, V) logits with temperature and nucleus (top-p) filtering; temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix whose mass reaches top_p
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1)[:, 0]


class HFEngine:
    """Batched sampling with transformers and a KV cache, on its own copy of the model (the trainer's copy is sharded
    and changes under it); left padding with explicit position ids; stops each sequence at <|im_end|> (or eos)."""

    def __init__(self, model, tokenizer, device="cpu"):
        self.model = copy.deepcopy(model).to(device).eval()
        self.device, self.tok = torch.device(device), tokenizer
        self.stop = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # the KV-cache argument of forward() was renamed past_key_values -> cache within transformers 5.x
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0):
        from transformers import DynamicCache
        B, L = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((B, L), self.pad, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, L - len(p):], attn[b, L - len(p):] = torch.tensor(p), 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        kv = {self.cache_arg: DynamicCache(config=self.model.config)}  # filled in place by every forward
        logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1,
                            **kv).logits[:, -1]
        new, lps, done = [[] for _ in range(B)], [[] for _ in range(B)], [False] * B
        for _ in range(max_new_tokens):
            logits = logits.float()
            tok = sample_token(logits, temperature, top_p)
            lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None])[:, 0]  # raw logits: the trainer's view
            for b, (t, v) in enumerate(zip(tok.tolist(), lp.tolist())):
                if not done[b]:
                    new[b].append(t)
                    lps[b].append(v)
                    done[b] = t in self.stop
            if all(done):
                break
            attn = torch.cat([attn, attn.new_ones(B, 1)], 1)
            pos = pos[:, -1:] + 1
            logits = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=pos, use_cache=True,
                                **kv).logits[:, -1]
        return [(n, lp, "stop" if n and n[-1] in self.stop else "length") for n, lp in zip(new, lps)]

    def update_weights(self, named_tensors):
        """Load (a subset of) the weights by HF parameter name; a name the model lacks is an error, not a no-op."""
        res = self.model.load_state_dict({k: v.to(self.device) for k, v in named_tensors}, strict=False)
        if res.unexpected_keys:
            raise KeyError(f"rollout: weights the engine's model does not have: {res.unexpected_keys[:5]}")

    def sleep(self):
        pass

    def wake_up(self):
        pass


class VLLMEngine:
    """vLLM's offline `LLM` in the trainer's process (one engine per rank, `external_launcher`: each rank samples its
    own prompts, so its seed differs per rank), asleep while the trainer works, weights pushed after every update.

    Written against vLLM 0.33's public API: `LLM(..., enable_sleep_mode=True)`, `llm.sleep(level=1)` (weights parked
    in CPU memory, KV cache dropped), `llm.wake_up(tags=[...])` ("weights" and "kv_cache" can be woken separately),
    `llm.apply_model(fn)` (runs fn on the model inside the worker; with the engine core in this process the closure
    and the tensors are not serialised) and `llm.reset_prefix_cache()`. Sampled-token log-probs come from
    `logprobs_mode="raw_logprobs"`: the log-softmax of the unprocessed logits, like the trainer's."""

    def __init__(self, model_path, tokenizer, seed=0, gpu_memory_utilization=0.75, max_model_len=23040):
        import os
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: weights reachable
        from vllm import LLM
        self.tok = tokenizer
        self.llm = LLM(model=model_path, dtype="bfloat16", seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, enable_sleep_mode=True, enable_prefix_caching=True,
                       logprobs_mode="raw_logprobs", generation_config="vllm",  # no sampling defaults from the model
                       distributed_executor_backend="external_launcher", tensor_parallel_size=1)
        self.stop = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        self.asleep = set()  # which of "weights", "kv_cache" are released

    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        sp = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, logprobs=0,
                            stop_token_ids=self.stop, skip_special_tokens=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            lps = [d[t].logprob for t, d in zip(c.token_ids, c.logprobs)]  # logprobs=0: just the sampled token
            res.append((list(c.token_ids), lps, "stop" if c.finish_reason == "stop" else "length"))
        return res

    def update_weights(self, named_tensors):
        if "weights" in self.asleep:  # waking later would restore the parked (old) weights over the new ones
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        weights = ((k, v.to("cuda", non_blocking=True)) for k, v in named_tensors)
        self.llm.apply_model(lambda model: model.load_weights(weights))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights

    def sleep(self):
        self.llm.sleep(level=1)
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self):
        if self.asleep:
            self.llm.wake_up(tags=sorted(self.asleep))
            self.asleep = set()


def make_engine(backend, model_path, tokenizer, model=None, seed=0, gpu_memory_utilization=0.75,
                max_model_len=23040):
    """backend hf, vllm, or auto (vLLM on CUDA when it is installed, else transformers). Prints the choice. The HF
    engine samples from `model` (copied) or loads `model_path`; vLLM always loads `model_path`."""
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
    if model is None:
        model, _ = common.load_model(model_path)
    return HFEngine(model, tokenizer, device)

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


def main(argv=None):
    import sandbox
    cfg = common.parse_config(Config, argv)
    common.set_seed(cfg.seed)
    model, tok = common.load_model(cfg.model)
    engine = make_engine(cfg.backend, cfg.model, tok, model=model, seed=cfg.seed,
                         max_model_len=1024 + cfg.max_response_len)
    problems = data.toy_problems(cfg.n, cfg.seed)
    prompts = [tok.apply_chat_template(p["prompt_messages"], tools=data.TOOLS, add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for p in problems]
    eps = rollout(engine, tok, prompts, max_turns=cfg.max_turns, max_response_len=cfg.max_response_len,
                  tools=tool_protocol("clean", max_chars=cfg.max_obs_chars), temperature=cfg.temperature,
                  top_p=cfg.top_p, execute=sandbox.make_executor(cfg.sandbox_url))
    for p, ep in zip(problems, eps):
        print(f"\n=== {p['question']} (answer {p['ground_truth']}) | {ep.num_turns} turns, {ep.num_tool_calls} calls "
              f"({ep.tool_errors} errors), {ep.response_len} tokens, finish {ep.finish}\n{ep.response_text}")
    print(f"\nre-tokenization drift: {retokenize_drift(eps, tok):.2f} of episodes")


if __name__ == "__main__":
    main()
