"""Data: the paper's datasets, prompt templates, and the built-in toy task.

Holds the `code_interpreter` tool declaration, the toy tokenizer (a real `PreTrainedTokenizerFast` with Qwen3's
special tokens and a chat template of the same structure as Qwen3's) and tiny Qwen3-architecture models built
from a config, so everything runs without a download.

    python data.py --toy_tokenizer /tmp/toy_tok     # write the toy tokenizer to a directory
"""

import json
import os

TOOL_NAME = "code_interpreter"
TOOLS = [{
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Run a Python script and return what it prints. The value of a final bare expression is "
                       "printed too. State does not persist between calls.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}]

# -----------------------------------------------------------------------------
# Toy tokenizer: byte-level BPE with Qwen3's special tokens and chat-template structure

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
                  "<tool_response>", "</tool_response>"]

# Same structure as Qwen3's template: a system turn that declares the tools inside <tools></tools>; assistant turns
# with an optional <think> block (kept for turns after the last real user query) and hermes <tool_call> blocks; tool
# results grouped into one user turn of <tool_response> blocks; the generation prompt opens an assistant turn (and
# pre-closes an empty think block when thinking is disabled).
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
{%- set ns = namespace(last_query=-1) %}
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
{%- if not reasoning and '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\n') %}
{%- endif %}
{{- '<|im_start|>assistant\n' }}
{%- if loop.index0 > ns.last_query %}{{- '<think>\n' + reasoning + '\n</think>\n\n' }}{%- endif %}
{{- content }}
{%- for tc in m.tool_calls or [] %}
{%- set f = tc.function if tc.function is defined else tc %}
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


def make_toy_tokenizer(path=None, vocab_size=512):
    """Build the toy tokenizer (deterministic); save it to `path` when given. Returns a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=131072,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    if path is not None:
        os.makedirs(path, exist_ok=True)
        fast.save_pretrained(path)
    return fast


# -----------------------------------------------------------------------------
# Tiny Qwen3-architecture models built from a config (no download)

TINY_SIZES = {  # name: (hidden, layers, heads, kv_heads, intermediate)
    "tiny": (64, 2, 4, 2, 128),         # tests: a forward/backward in milliseconds
    "toy_student": (128, 4, 4, 2, 384),
    "toy_teacher": (256, 4, 8, 4, 768),
}


def tiny_qwen3(vocab_size, size="tiny", seed=0):
    """A randomly initialised Qwen3ForCausalLM (fp32, CPU) of one of TINY_SIZES; `vocab_size` may be a tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if not isinstance(vocab_size, int):
        vocab_size = len(vocab_size)
    hidden, layers, heads, kv_heads, inter = TINY_SIZES[size]
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
                      max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=10000.0,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy_tokenizer", metavar="DIR", required=True, help="write the toy tokenizer here")
    args = ap.parse_args()
    t = make_toy_tokenizer(args.toy_tokenizer)
    print(f"toy tokenizer: {len(t)} tokens -> {args.toy_tokenizer}")
    print(json.dumps(t.apply_chat_template([{"role": "user", "content": "hi"}], tools=TOOLS, tokenize=False,
                                           add_generation_prompt=True)))
