"""Models and tokenizers: the chat template, the toy and Qwen3 tokenizers, Qwen3-architecture models built from a
config (tiny ones for the toy, and the real 0.6B / 1.7B / 4B shapes), and `load_model` for every way a script names a
model (a HF directory, a Hub id, a run directory, `toy:<size>`, `shape:<name>`).

    python models.py --toy_tokenizer /tmp/toy_tok     # write the toy tokenizer to a directory
    python models.py --fetch_qwen3                    # cache Qwen3's BPE ranks (~/.cache/sod; $SOD_CACHE)
"""

import json
import os

import torch

import common
import tools
import toy

# -----------------------------------------------------------------------------
# Toy tokenizer: byte-level BPE with Qwen3's special tokens and chat-template structure

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
                  "<tool_response>", "</tool_response>"]

# Renders exactly as Qwen3's own template (tests/test_realscale.py checks a table of cases): tools declared in the
# system turn; after the last real user query, a <think> block (newlines stripped) on the last message and on turns
# with reasoning; hermes <tool_call> blocks; consecutive tool results in one user turn of <tool_response> blocks; the
# generation prompt opens an assistant turn (pre-closing an empty think block when thinking is disabled).
CHAT_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within '
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    '</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(last_query=messages | length - 1) %}
{%- for m in messages %}
{%- if m.role == 'user' and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) %}
{%- set ns.last_query = loop.index0 %}
{%- endif %}
{%- endfor %}
{%- for m in messages %}
{%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}
{%- elif m.role == 'assistant' %}
{%- set content = m.content or '' %}
{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' %}
{%- if m.reasoning_content is not string and '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\n') %}
{%- endif %}
{{- '<|im_start|>assistant\n' }}
{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
{{- '<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
{%- else %}{{- content }}{%- endif %}
{%- for tc in m.tool_calls or [] %}
{%- set f = tc.function if tc.function else tc %}
{%- if loop.first and content or not loop.first %}{{- '\n' }}{%- endif %}
{{- '<tool_call>\n{"name": "' + f.name + '", "arguments": ' }}
{%- if f.arguments is string %}{{- f.arguments }}{%- else %}{{- f.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif m.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + m.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}
{%- endif %}
""".strip()

# Qwen-style pre-tokenisation: single digits (arithmetic stays learnable), letter runs, punctuation runs, whitespace.
_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
          r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

# A small corpus of what toy conversations look like, so BPE learns useful merges for them.
_CORPUS = """
You are a helpful assistant that solves problems by writing Python code.
Compute the value of the expression. Reason step by step, use the code_interpreter tool, and put the final answer
in \\boxed{}. Let me compute this with Python. The result is printed. The tool returned an error, let me fix the
code. So the answer is \\boxed{42}. print(a * b + c) result = x ** 2 - y // 3 % 7 def solve(): return total
Traceback (most recent call last): File "<string>", line 1, in <module> NameError: name 'x' is not defined
{"name": "code_interpreter", "arguments": {"code": "print(123 * 456)"}} import math for i in range(10): if else
What is the sum of the numbers? Answer with a single integer. First I multiply, then I add the remainder.
"""


def _fast(tok, specials):
    """A `tokenizers` Tokenizer as a PreTrainedTokenizerFast with Qwen3's eos and pad and our chat template."""
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=specials, model_max_length=131072,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _toy_chunks():
    """Texts the toy tokenizer keeps whole, one token each (added tokens, matched before BPE): the fixed parts of the
    system turn that declares the toy's tool (~200 BPE tokens, the bulk of every toy sequence, would otherwise cost
    most of each forward pass), the opening of a tool call, the instruction under each question and the fixed
    phrases of the SFT trajectories (a tiny model spends its steps on copying numbers, and a rollout is ~20 tokens
    shorter). Decoding gives the same text back."""
    head = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with " \
           "function signatures within <tools></tools> XML tags:\n<tools>"
    tail = "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " \
           "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": " \
           "<args-json-object>}\n</tool_call>"
    schema = "\n" + json.dumps(tools.CLEAN_TOOLS[0], ensure_ascii=False)
    call = '{"name": "' + tools.TOOL_NAME + '", "arguments": {"code": "'
    return [head, schema, tail, call, "\n\n" + toy.TOY_PROMPT, toy.THINK_CALL, toy.THINK_FIX, toy.THINK_ADD,
            toy.THINK_DONE, toy.ANSWER_OPEN]


def make_toy_tokenizer(path=None, vocab_size=1024):
    """Build the toy tokenizer (deterministic); save it to `path` when given. Returns a PreTrainedTokenizerFast."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    system = CHAT_TEMPLATE.split("{%- elif messages[0].role == 'system' %}")[0]  # the tools block, verbatim
    system = system.replace("' }}", "").replace("'", "") + json.dumps(tools.CLEAN_TOOLS)
    sft = "\n".join(json.dumps(c["messages"]) for c in toy.toy_sft_conversations(16, seed=7))  # solved trajectories
    tok.train_from_iterator([_CORPUS] * 4 + [system] * 8 + [sft] * 2, trainer=trainer)
    tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in _toy_chunks()])
    fast = _fast(tok, SPECIAL_TOKENS[1:])
    if path is not None:
        os.makedirs(path, exist_ok=True)
        fast.save_pretrained(path)
    return fast


# -----------------------------------------------------------------------------
# Qwen3's real tokenizer, offline: Qwen's 151,643 byte-level BPE ranks (shared by Qwen2, 2.5 and 3) from the one
# file `qwen.tiktoken` of the qwen-agent wheel, Qwen2's split, NFC, and Qwen3's 26 added tokens at their ids

QWEN3_ADDED = [  # ids 151,643 ... 151,668 in this order; the first 14 are special, the FIM, tool and think tags not
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>"]
QWEN3_BPE = os.path.join(os.environ.get("SOD_CACHE", os.path.expanduser("~/.cache/sod")), "qwen.tiktoken")
_QWEN_AGENT, _BPE_SHA256 = "qwen-agent==0.0.34", "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"


def fetch_qwen3_bpe(dest=QWEN3_BPE):
    """The path of Qwen's BPE ranks, downloaded once (the qwen-agent wheel, without its dependencies) and cached."""
    import glob
    import hashlib
    import subprocess
    import sys
    import tempfile
    import zipfile
    if not os.path.exists(dest):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", _QWEN_AGENT, "-d", tmp],
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"models: cannot download {_QWEN_AGENT} for Qwen's BPE ranks: {r.stderr[-300:]}")
            blob = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]).read("qwen_agent/utils/qwen.tiktoken")
        if hashlib.sha256(blob).hexdigest() != _BPE_SHA256:
            raise SystemExit(f"models: qwen.tiktoken from {_QWEN_AGENT} has an unexpected checksum")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest + ".tmp", "wb") as f:
            f.write(blob)
        os.replace(dest + ".tmp", dest)
    return dest


def make_qwen3_tokenizer(path=None):
    """Qwen3's tokenizer from the BPE ranks at `path` (None: the cached copy, fetched once) with this project's
    Qwen3 chat template. len(tok) is 151,669; Qwen3's embeddings have 151,936 rows (the rest is padding)."""
    import base64

    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = path or fetch_qwen3_bpe()
    with open(path, "rb") as f:
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f if line.strip())}
    conv = TikTokenConverter(path, pattern=_SPLIT)
    conv.load_tiktoken_bpe = lambda _: ranks  # plain "base64 rank" lines: no tiktoken package needed
    tok = conv.converted()
    tok.normalizer = normalizers.NFC()
    for i, t in enumerate(QWEN3_ADDED):
        special = i < 14  # as Qwen3's tokenizer_config.json: <|endoftext|> ... <|video_pad|>; not FIM, tool or think
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(t, special=special, normalized=False)])
    assert tok.token_to_id("</think>") == 151668, "the BPE file does not hold Qwen's 151,643 ranks"
    return _fast(tok, QWEN3_ADDED[1:14])


# -----------------------------------------------------------------------------
# Qwen3-architecture models built from a config (no download): tiny ones for the toy, and the real shapes

TINY_SIZES = {  # name: (hidden, layers, heads, kv_heads, intermediate)
    "tiny": (64, 2, 4, 2, 128),         # tests: a forward/backward in milliseconds
    "toy": (128, 4, 4, 2, 384),         # toy.sh's teacher and student (one architecture, different data)
    "toy_student": (128, 4, 4, 2, 384),
    "toy_teacher": (128, 6, 4, 2, 384),  # a deeper teacher for the tests and benches
}
# The released configs: head_dim 128, tied embeddings of 151,936 rows, rope_theta 1e6, 40,960 positions
QWEN3_SHAPES = {"qwen3-0.6b": (1024, 28, 16, 8, 3072), "qwen3-1.7b": (2048, 28, 16, 8, 6144),
                "qwen3-4b": (2560, 36, 32, 8, 9728)}


def qwen3_config(size, vocab_size=151936):
    """A Qwen3Config of one of TINY_SIZES (vocab_size rows) or QWEN3_SHAPES (always the real 151,936 rows)."""
    from transformers import Qwen3Config
    if size not in TINY_SIZES and size not in QWEN3_SHAPES:
        raise SystemExit(f"model: unknown size {size!r}; choose from {', '.join([*TINY_SIZES, *QWEN3_SHAPES])}")
    real = size in QWEN3_SHAPES
    hidden, layers, heads, kv_heads, inter = (QWEN3_SHAPES if real else TINY_SIZES)[size]
    return Qwen3Config(vocab_size=151936 if real else vocab_size, hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       head_dim=128 if real else hidden // heads, max_position_embeddings=40960 if real else 8192,
                       tie_word_embeddings=True, rope_theta=1e6 if real else 10000.0, rms_norm_eps=1e-6,
                       bos_token_id=151643 if real else None, eos_token_id=151645 if real else None,
                       pad_token_id=None)


def tiny_qwen3(vocab_size, size="tiny", seed=0, dtype=None):
    """A randomly initialised Qwen3ForCausalLM (CPU, fp32 unless `dtype`) of a size above; `vocab_size` may be a
    tokenizer (ignored for the real shapes, whose embeddings are larger than the tokenizer)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = qwen3_config(size, vocab_size if isinstance(vocab_size, int) else len(vocab_size))
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype or torch.float32)  # built in `dtype`, never upcast

# -----------------------------------------------------------------------------
# Loading: every way a script names a model


def resolve_model_path(spec):
    """The directory or Hub id that `spec` names, as vLLM and `from_pretrained` load it: a run directory becomes its
    newest intact checkpoint's `model/`, a checkpoint directory its `model/`; a HF model directory is itself;
    `toy:<size>` and `shape:<name>` are returned as they are (built in memory by load_model, not loadable by vLLM).
    Anything else must be a Hub id, checked here in one request, so that a wrong name is one line, not five retries
    and a traceback."""
    if spec.startswith(("toy:", "shape:")):
        return spec
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "config.json")):
            return spec
        if os.path.isfile(os.path.join(spec, "model", "config.json")):  # one checkpoint: out/x/step_000400
            return os.path.join(spec, "model")
        if ckpt := common.latest_checkpoint(spec):
            return os.path.join(ckpt, "model")
        raise SystemExit(f"model: {spec!r} is a directory with neither a config.json, a model/ nor a step_* "
                         "checkpoint")
    # a path never goes to the Hub: ./x, /x, ~/x, x/y/z, out/x (where every script writes), dir/x for a local dir
    first = spec.split("/")[0]
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1 or first == "out" or os.path.isdir(first):
        raise SystemExit(f"model: {spec!r} does not exist (a local path; a Hub id is org/name)")
    return hub_model(spec)


def hub_model(repo):
    """`repo` if the Hub has it, or the local directory of its cached copy when the Hub cannot be reached."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
    try:
        cached = snapshot_download(repo, local_files_only=True)
    except LocalEntryNotFoundError:
        cached = None
    except HFValidationError:
        raise SystemExit(f"model: {repo!r} is neither a local path nor a valid Hub id") from None
    if constants.HF_HUB_OFFLINE:
        if cached is None:
            raise SystemExit(f"model: {repo!r} is not in the Hub cache and HF_HUB_OFFLINE is set; pass a local model "
                             "directory, or download it where the Hub can be reached")
        return cached
    try:
        HfApi().model_info(repo, timeout=10)  # one request, no retries
        return repo
    except RepositoryNotFoundError:
        raise SystemExit(f"model: {repo!r} is neither a local directory nor a model on the Hub (or it is private: "
                         "log in with `hf auth login`)") from None
    except Exception as e:  # no network, DNS, a proxy, the Hub down: whatever the HTTP stack raises
        if cached is None:
            raise SystemExit(f"model: cannot reach the Hub for {repo!r} ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:150]}); pass a local model directory") from None
        print(f"model: the Hub is unreachable ({type(e).__name__}); using the cached copy of {repo}", flush=True)
        return cached


def load_model(spec, dtype=torch.float32):
    """A causal LM and its tokenizer from a HF directory or Hub id, a run directory (its latest checkpoint), or
    `toy:<size>` (a fresh tiny Qwen3 with the toy tokenizer, no download), or `shape:<size>` (the same, or a real
    shape such as qwen3-0.6b, with Qwen3's tokenizer and its 151,936 embedding rows). Weights load into host memory;
    fully_shard moves them to the device one block at a time (wrap_fsdp). `dtype="auto"` keeps the dtype the weights
    come in (fp32 for toy: and shape:). `model.checkpoint_dtype` records that dtype: save_checkpoint writes it."""
    import glob

    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    if spec.startswith(("toy:", "shape:")):  # built in memory, in fp32 unless asked otherwise
        dtype = torch.float32 if dtype == "auto" else dtype
        if spec.startswith("toy:"):
            tok = make_toy_tokenizer()
            model = tiny_qwen3(tok, size=spec[4:], dtype=dtype)
        else:  # random weights of TINY_SIZES / QWEN3_SHAPES with Qwen3's real vocabulary
            model, tok = tiny_qwen3(151936, size=spec[6:], dtype=dtype), make_qwen3_tokenizer()
        model.checkpoint_dtype = dtype
        return model, tok
    path = resolve_model_path(spec)
    for f in glob.glob(os.path.join(path, "*.safetensors")) if os.path.isdir(path) else []:
        try:
            with safe_open(f, "pt"):  # the file covers every tensor its header lists (not cut short)
                pass
        except Exception as e:
            raise SystemExit(f"model: {f} is damaged ({type(e).__name__}: {e})") from None
    came_in = AutoConfig.from_pretrained(path).dtype  # config.json's dtype (from_pretrained overwrites it)
    came_in = getattr(torch, came_in) if isinstance(came_in, str) else came_in or torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=came_in if dtype == "auto" else dtype)
    model.checkpoint_dtype = came_in
    return model, AutoTokenizer.from_pretrained(path)



if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy_tokenizer", metavar="DIR", help="write the toy tokenizer here")
    ap.add_argument("--fetch_qwen3", action="store_true", help="download and cache Qwen's BPE ranks")
    args = ap.parse_args()
    if args.fetch_qwen3:
        print(f"qwen3 tokenizer: BPE ranks at {fetch_qwen3_bpe()}")
    if args.toy_tokenizer:
        t = make_toy_tokenizer(args.toy_tokenizer)
        print(f"toy tokenizer: {len(t)} tokens -> {args.toy_tokenizer}")
