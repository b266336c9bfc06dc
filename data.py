"""The paper's datasets in their real Hub layouts, and the prompts the original wraps around each problem.

`load_eval_data` (AIME 2024/2025, GPQA-Diamond, LiveCodeBench v6 from Gen-Verse/Open-AgentRL-Eval, or the toy
benchmark), `load_rl_data` (Open-AgentRL-30K, verl layout), `load_sft_data` (Open-AgentRL-SFT-3K): each takes a Hub
id, a local copy of the repo, or one parquet/jsonl file.
"""

import json
import os

import tools
import toy

# -----------------------------------------------------------------------------
# Prompts: the texts the original dataset class wraps around each problem

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
    filled = _as_one_arrow_table(rows, where) if fn is _lcb else None
    out = []
    for i, row in enumerate(rows):
        msgs, gt, extra = fn(row, first)
        if filled:
            gt, extra = filled[i]
        index = extra.get("index")
        out.append({"prompt_messages": msgs, "ground_truth": gt, "tools": tools.TOOLS, "extra_info": extra,
                    "source": first if fn is _aime else row.get("data_source", first),
                    "id": str(index) if index is not None else f"{os.path.basename(where)}-{i}"})
    return out


def _as_one_arrow_table(rows, where):
    """(ground truth, extra_info) per LiveCodeBench row as the original's pipeline holds them: map_lcb json.loads
    both (recipe/demystify/reward.py l.144, l.146) and datasets.map (l.93) stores the dicts as one Arrow struct column
    for the file, so a key that only some rows have (nested ones too) is None in the others, e.g. `fn_name: None` on
    every stdin problem once one problem has a fn_name (reward.grade_code: the original then scores them -1)."""
    import pyarrow as pa
    try:
        rms, extras = (pa.array([_json(r.get(k)) for r in rows]).to_pylist() for k in ("reward_model", "extra_info"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # datasets would fail the same way
        raise SystemExit(f"data: {where}: reward_model / extra_info do not make one Arrow column: {e}") from None
    return [(rm["ground_truth"], extra or {}) for rm, extra in zip(rms, extras)]

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
        if path_or_repo.count("/") != 1 or path_or_repo.endswith((".parquet", ".jsonl")):
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
    """The rows of one parquet or jsonl file; one that is empty, cut short or of another format is one line naming
    it (not a pyarrow traceback)."""
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise SystemExit(f"data: {path} is not a readable parquet file ({str(e).splitlines()[0]})") from None
    else:
        rows = []
        with open(path, errors="replace") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise SystemExit(f"data: {path}, line {i}, is not JSON ({e}); --data takes parquet or jsonl "
                                     "files") from None
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
            out.append({"messages": _json(r["messages"]), "tools": _json(r.get("tools")) or tools.TOOLS})
    return out


def load_eval_data(bench, path_or_repo=EVAL_REPO):
    """Problems of one benchmark; "toy" is the toy benchmark (toy.eval_problems)."""
    if bench == "toy":
        return toy.eval_problems()
    if bench not in EVAL_FILES:
        raise SystemExit(f"eval: unknown bench {bench!r}; choose from toy, {', '.join(EVAL_FILES)}")
    relpath, source = EVAL_FILES[bench]
    return [p for f in _files(path_or_repo, relpath) for p in paper_problems(_rows(f), f, source)]
