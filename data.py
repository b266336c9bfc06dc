"""Data: the paper's datasets, prompt templates, and the built-in toy task.

Holds the `code_interpreter` tool declaration, the chat template (renders like Qwen3's), the toy tokenizer (a real
`PreTrainedTokenizerFast` with Qwen3's special tokens), Qwen3's real tokenizer (one cached file, no other download),
and Qwen3-architecture models built from a config: tiny ones and the real 0.6B / 1.7B / 4B shapes.

    python data.py --toy_tokenizer /tmp/toy_tok     # write the toy tokenizer to a directory
    python data.py --fetch_qwen3                    # cache Qwen3's BPE ranks (~/.cache/sod; $SOD_CACHE)
"""

import json
import os

TOOL_NAME = "code_interpreter"


def _schema(description, code_description):
    return [{"type": "function", "function": {
        "name": TOOL_NAME, "description": description,
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": code_description}},
                       "required": ["code"]}}}]


# The schema the released models and the teacher saw, verbatim from recipe/demystify/sandbox_fusion_tool_config.yaml
# (rendered through the template's `tools`, key order as verl's model_dump gives it). Real datasets use it.
TOOLS = _schema("A tool for executing code.", "The code to execute.")
# The toy's schema: it describes the clean protocol's echo of a final bare expression.
CLEAN_TOOLS = _schema("Run a Python script and return what it prints. The value of a final bare expression is printed "
                      "too. State does not persist between calls.", "The Python code to run.")

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


def make_toy_tokenizer(path=None, vocab_size=1024):
    """Build the toy tokenizer (deterministic); save it to `path` when given. Returns a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    system = CHAT_TEMPLATE.split("{%- elif messages[0].role == 'system' %}")[0]  # the tools block, verbatim
    sft = "\n".join(json.dumps(c["messages"]) for c in toy_sft_conversations(16, seed=7))  # solved trajectories
    tok.train_from_iterator([_CORPUS] * 4 + [system.replace("' }}", "").replace("'", "") + json.dumps(CLEAN_TOOLS)] * 8
                            + [sft] * 2, trainer=trainer)
    fast = _fast(tok, SPECIAL_TOKENS[1:])
    if path is not None:
        os.makedirs(path, exist_ok=True)
        fast.save_pretrained(path)
    return fast


# -----------------------------------------------------------------------------
# Qwen3's real tokenizer, offline: Qwen's 151,643 byte-level BPE ranks (shared by Qwen2, 2.5 and 3) from the one
# file `qwen.tiktoken` of the qwen-agent wheel, Qwen2's split, NFC, and Qwen3's 26 added tokens at their ids

QWEN3_ADDED = [  # ids 151,643 ... 151,668 in this order; the tool and think tags are not special (decoding keeps them)
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
                raise SystemExit(f"data: cannot download {_QWEN_AGENT} for Qwen's BPE ranks: {r.stderr[-300:]}")
            blob = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]).read("qwen_agent/utils/qwen.tiktoken")
        if hashlib.sha256(blob).hexdigest() != _BPE_SHA256:
            raise SystemExit(f"data: qwen.tiktoken from {_QWEN_AGENT} has an unexpected checksum")
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
    for t in QWEN3_ADDED:
        special = t.startswith("<|")
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(t, special=special, normalized=False)])
    assert tok.token_to_id("</think>") == 151668, "the BPE file does not hold Qwen's 151,643 ranks"
    return _fast(tok, [t for t in QWEN3_ADDED[1:] if t.startswith("<|")])


# -----------------------------------------------------------------------------
# Qwen3-architecture models built from a config (no download): tiny ones for the toy, and the real shapes

TINY_SIZES = {  # name: (hidden, layers, heads, kv_heads, intermediate)
    "tiny": (64, 2, 4, 2, 128),         # tests: a forward/backward in milliseconds
    "toy_student": (128, 4, 4, 2, 384),
    "toy_teacher": (128, 6, 4, 2, 384),  # 1.5x the student's depth, trained longer (toy.sh)
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
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = qwen3_config(size, vocab_size if isinstance(vocab_size, int) else len(vocab_size))
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype or torch.float32)  # built in `dtype`, never upcast


# -----------------------------------------------------------------------------
# Prompts (DESIGN §4): the texts the original dataset class wraps around each problem

# Protocol constants, verbatim from recipe/demystify/reward.py (its module strings and CustomRLHFDataset's map
# functions, typos included).
ANSWER_FORMAT = ("\nRemember once you make sure the current answer is your final answer, do not call the tools again "
                 "and directly output the final answer in the following text format, the answer format must be: "
                 "\\boxed{'The final answer goes here.'}.")
MATH_PROMPT_1 = "Analyze and solve the following math problem step by step. \n\n"
MATH_PROMPT_2 = ("\n\nThe tool could be used for more precise and efficient calculation and could help you to verify "
                 "your result before you reach the final answer.")
AGENT_PROMPT = ("\n\n**Note: You should first analyze the problem and form a high-level solution strategy, then "
                "utilize the tools to help you solve the problem.**")
GPQA_PROMPT_1 = "Analyze and solve the following {} problem step by step. \n\n"
GPQA_LETTER = "\n Here you need to put the final uppercase letter option of this problem into \\boxed{}"
LCB_START = ("You will be given a question (problem specification) and will generate a correct Python program that "
             "matches the specification and passes all tests.\n\n")
LCB_EXAMPLES = "\nHere are some input and output examples of the expected code:\nInput:{}\nOutput:\n{}"
LCB_CODE = ("\n\nRead the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
            "the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program "
            "runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n```python\n# YOUR CODE HERE"
            "\n\"")
CODE_SUBMIT = ("\nBefore sumbit your code, you can utilize tools to check the correctness of your code, once you make "
               "sure the current code is correct, do not call the tools again and submit your code within ```python\n"
               "# YOUR CODE HERE\n```.")
UNITS_NOTE = ("\nDo not put units of the final answer inside \\boxed{}. The content of \\boxed{} should be the "
              "numerical value of the final answer only, without any units.")  # math_dapo, mega-science
UNITS_NOTE_OTHER = ("\nDo not put units of the final answer inside \\boxed{}. The content of \\boxed{} should be the "
                    "final numerical value of the final answer only, without any units.")  # any other math source
TOY_PROMPT = "Use the tool, then put the answer in \\boxed{}."


def source_kind(source):
    """A data source -> its grader: toy, gpqa, code (as the original: "code" in the lower-cased source), math."""
    s = str(source).lower()
    return "toy" if s == "toy" else "gpqa" if "gpqa" in s else "code" if "code" in s else "math"


def _json(x):
    return json.loads(x) if isinstance(x, str) else x


def _aime(row, first):
    q, a = (row["Problem"], row["Answer"]) if first == "AIME2024" else (row["problem"], row["answer"])
    return [{"role": "user", "content": MATH_PROMPT_1 + q + MATH_PROMPT_2 + AGENT_PROMPT + ANSWER_FORMAT}], str(a), {}


def _gpqa(row, first):
    text = GPQA_PROMPT_1.format(row["domain"]) + row["problem"] + MATH_PROMPT_2 + AGENT_PROMPT + ANSWER_FORMAT
    return [{"role": "user", "content": text + GPQA_LETTER}], str(row["solution"]), {}


def _lcb(row, first):
    tests = _json(row["reward_model"])["ground_truth"]  # the prompt shows every test case the grader runs
    text = LCB_START + row["problem"] + LCB_EXAMPLES.format(tests["inputs"], tests["outputs"]) + AGENT_PROMPT
    return [{"role": "user", "content": text + LCB_CODE + CODE_SUBMIT}], tests, _json(row.get("extra_info")) or {}


def _verl(row, first):
    """verl-layout rows: math_dapo / mega-science get the units note; any other source the code suffix when its own
    source says "code" (case-sensitive, as the original), else the full math wrapping and a second units note."""
    prefix, suffix = "", UNITS_NOTE
    if first not in ("math_dapo", "mega-science"):
        code = "code" in str(row.get("data_source", ""))
        prefix, suffix = ("", AGENT_PROMPT + CODE_SUBMIT) if code else \
            (MATH_PROMPT_1, MATH_PROMPT_2 + AGENT_PROMPT + ANSWER_FORMAT + UNITS_NOTE_OTHER)
    msgs = [dict(m) for m in row["prompt"]]
    msgs[0]["content"] = prefix + msgs[0]["content"] + suffix
    return msgs, _json(row["reward_model"])["ground_truth"], _json(row.get("extra_info")) or {}


PAPER_MAPS = {"AIME2024": _aime, "AIME2025": _aime, "gpqa_diamond": _gpqa, "LiveCodeBench_v6": _lcb}
NEEDS = {_aime: [], _gpqa: ["problem", "solution", "domain"], _lcb: ["problem", "reward_model"],
         _verl: ["prompt", "reward_model"]}


def paper_problems(rows, where, default_source=""):
    """Rows of one file -> problems, prompted as the original's CustomRLHFDataset does: the first row's data_source
    (or `default_source` for a file without the column) picks one mapping for the whole file."""
    first = rows[0].get("data_source", default_source)
    fn = PAPER_MAPS.get(first, _verl)
    need = NEEDS[fn] or (["Problem", "Answer"] if first == "AIME2024" else ["problem", "answer"])
    missing = [k for k in need if k not in rows[0]]
    if missing:
        raise SystemExit(f"data: {where} lacks column(s) {missing}; it has {sorted(rows[0])}")
    mixed = sorted({str(r.get("data_source", first)) for r in rows})
    if len(mixed) > 1:
        print(f"data: {where} mixes data sources {mixed}; as in the original, the first row's ({first}) picks the "
              "prompt for every row")
    out = []
    for i, row in enumerate(rows):
        msgs, gt, extra = fn(row, first)
        out.append({"prompt_messages": msgs, "ground_truth": gt, "tools": TOOLS, "extra_info": extra,
                    "source": first if fn is _aime else row.get("data_source", first),
                    "id": str(extra.get("index", f"{os.path.basename(where)}-{i}"))})
    return out

# -----------------------------------------------------------------------------
# The toy task (DESIGN §7): arithmetic too large for a tiny model's head, one or two tool calls per problem


def _call(code, reasoning):
    return {"role": "assistant", "content": "", "reasoning_content": reasoning,
            "tool_calls": [{"type": "function", "function": {"name": TOOL_NAME, "arguments": {"code": code}}}]}


def toy_problems(n, seed):
    """n seeded problems: "a * b" (one call) or "a * b + c" computed in two calls; ground truth as a string."""
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # fixed widths: every number sits at a fixed offset in the prompt, which tiny models learn to copy from
        a, b, c = rng.randint(1000, 9999), rng.randint(100, 999), rng.randint(1000, 9999)
        if rng.random() < 0.5:
            q, gt, kind = f"What is {a} * {b}?", a * b, "mul"
        else:
            q, gt, kind = f"What is {a} * {b} + {c}? First multiply, then add.", a * b + c, "muladd"
        out.append({"question": q, "prompt_messages": [{"role": "user", "content": f"{q}\n\n{TOY_PROMPT}"}],
                    "ground_truth": str(gt), "tools": CLEAN_TOOLS, "source": "toy", "kind": kind, "args": (a, b, c),
                    "id": f"toy-{seed}-{len(out)}"})
    return out


def _tool_reply(code, protocol):
    """What the model reads back when `code` (ours) runs in the sandbox under `protocol` (rollout.ToolProtocol's
    name): the sandbox's own script runner, in process, so a traceback is formatted as sandbox.py formats it with
    this interpreter's version; then the protocol's reply text for that result."""
    import contextlib
    import io
    import sys

    import rollout
    import sandbox
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    paper = protocol == "paper"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = sandbox._run_script(rollout.paper_code(code) if paper else code, echo=not paper)
    finally:
        sys.argv = argv  # _run_script sets it for the code
    res = sandbox.ExecResult("ok" if rc == 0 else "error", out.getvalue(), err.getvalue(), 0.0)
    if paper:
        return rollout.paper_observation(res, rollout.PROTOCOLS["paper"]["max_chars"])
    return rollout.observation({"name": TOOL_NAME, "arguments": {"code": code}}, res, 1 << 20)


def toy_sft_conversations(n, seed, protocol="clean"):
    """Solved toy trajectories in the SFT format (messages + tools): call the tool, read it, answer; two-step
    problems call twice (copying the first result into the second call); a quarter of the trajectories first make
    a mistake (a NameError) and fix it from the traceback. Tool messages are the replies of `protocol`."""
    import random
    rng = random.Random(seed + 1)
    convs = []
    for p in toy_problems(n, seed):
        a, b, c = p["args"]
        msgs = list(p["prompt_messages"])
        if rng.random() < 0.25:
            msgs += [_call(f"print({a} * x)", "I compute it with code."),
                     {"role": "tool", "content": _tool_reply(f"print({a} * x)", protocol)}]
            first = "The code had a typo. I fix it."
        else:
            first = "I compute it with code."
        msgs += [_call(f"print({a} * {b})", first),
                 {"role": "tool", "content": _tool_reply(f"print({a} * {b})", protocol)}]
        if p["kind"] == "muladd":
            msgs += [_call(f"print({a * b} + {c})", f"The product is {a * b}. Now I add {c}."),
                     {"role": "tool", "content": _tool_reply(f"print({a * b} + {c})", protocol)}]
        msgs.append({"role": "assistant", "content": f"The answer is \\boxed{{{p['ground_truth']}}}.",
                     "reasoning_content": f"The tool printed {p['ground_truth']}."})
        convs.append({"messages": msgs, "tools": CLEAN_TOOLS})
    return convs

# -----------------------------------------------------------------------------
# The paper's datasets, in their Hub layouts: a Hub id, a local copy of the repo, or one file

EVAL_REPO = "Gen-Verse/Open-AgentRL-Eval"
EVAL_FILES = {  # bench: (file in the eval repo, the data_source the original's scripts give it)
    "aime24": ("aime2024/aime_2024_problems.parquet", "AIME2024"),
    "aime25": ("aime2025/aime_2025_problems.parquet", "AIME2025"),
    "gpqa_diamond": ("gpqa-diamond/gpqa_diamond.parquet", "gpqa_diamond"),
    "livecodebench": ("livecodebench-v6/lcb_v6_2502_2505.parquet", "LiveCodeBench_v6"),
}


def _files(path_or_repo, relpath=None):
    """The parquet/jsonl files of a local file, a local directory (`relpath` in it, else every data file under it)
    or a Hub dataset repo (downloaded once)."""
    import glob
    if os.path.isfile(path_or_repo):
        return [path_or_repo]
    root = path_or_repo
    if not os.path.isdir(root):
        if path_or_repo.count("/") != 1:
            raise SystemExit(f"data: {path_or_repo!r} is neither a local file/directory nor a Hub dataset id")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
        try:
            root = snapshot_download(path_or_repo, repo_type="dataset",
                                     allow_patterns=[relpath] if relpath else ["*.parquet", "*.jsonl"])
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
            raise SystemExit(f"data: cannot fetch the dataset {path_or_repo!r} from the Hub ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); pass --data with a local copy (its directory, "
                             "or one parquet/jsonl file)") from None
    if relpath:
        files = glob.glob(os.path.join(root, relpath)) or glob.glob(os.path.join(root, "**", os.path.basename(
            relpath)), recursive=True)
    else:
        files = sorted(f for ext in ("parquet", "jsonl") for f in glob.glob(os.path.join(root, "**", f"*.{ext}"),
                                                                             recursive=True))
    if not files:
        raise SystemExit(f"data: no {relpath or 'parquet/jsonl file'} in {path_or_repo!r}")
    return files


def _rows(path):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        rows = pq.read_table(path).to_pylist()
    else:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"data: {path} is empty")
    return rows


def load_rl_data(path_or_repo="Gen-Verse/Open-AgentRL-30K"):
    """RL prompts (Open-AgentRL-30K: Open-AgentRL-30K.parquet, verl layout), each file prompted by its first row's
    data_source."""
    return [p for f in _files(path_or_repo) for p in paper_problems(_rows(f), f)]


def load_sft_data(path_or_repo="Gen-Verse/Open-AgentRL-SFT-3K"):
    """SFT conversations (Open-AgentRL-SFT-3K: full_sft_3k_shuffled_v4.parquet, `messages` + `tools`)."""
    out = []
    for f in _files(path_or_repo):
        for r in _rows(f):
            if "messages" not in r:
                raise SystemExit(f"data: {f} lacks column(s) ['messages']; it has {sorted(r)}")
            out.append({"messages": _json(r["messages"]), "tools": _json(r.get("tools")) or TOOLS})
    return out


def load_eval_data(bench, path_or_repo=EVAL_REPO):
    """Problems of one benchmark; "toy" is 200 fixed toy problems (a seed no training run uses by default)."""
    if bench == "toy":
        return toy_problems(200, seed=999_999)
    if bench not in EVAL_FILES:
        raise SystemExit(f"eval: unknown bench {bench!r}; choose from toy, {', '.join(EVAL_FILES)}")
    relpath, source = EVAL_FILES[bench]
    return [p for f in _files(path_or_repo, relpath) for p in paper_problems(_rows(f), f, source)]


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
