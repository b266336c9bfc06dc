"""Every data source the original's dataset map tests for gets the prompt it gets there.

The original (YoungZ365/SOD, recipe/demystify/reward.py, CustomRLHFDataset._read_files_and_tokenize) picks one map
function per file by its first row's data_source: "AIME2025" / "AIME2024" -> map_fn, "math_dapo" / "mega-science" ->
map_fn2, "gpqa_diamond" -> map_fn_gpqa, "LiveCodeBench_v6" -> map_lcb, anything else -> map_fn_skywork, which tests
`"code" in row['data_source']` (case-sensitive). One row per name (and per branch of the fallback), each loaded from a
one-row file by data.load_rl_data, against the text those functions build. The strings below are copied from the
original file, not from data.py, so a typo on either side shows."""
import json

import pytest

import data

# recipe/demystify/reward.py, verbatim
answer_format = "\nRemember once you make sure the current answer is your final answer, do not call the tools again and directly output the final answer in the following text format, the answer format must be: \\boxed{'The final answer goes here.'}."  # noqa: E501
math_prompt_1 = "Analyze and solve the following math problem step by step. \n\n"
math_prompt_2 = "\n\nThe tool could be used for more precise and efficient calculation and could help you to verify your result before you reach the final answer."  # noqa: E501
agent_prompt = "\n\n**Note: You should first analyze the problem and form a high-level solution strategy, then utilize the tools to help you solve the problem.**"  # noqa: E501
gpqa_letter = "\n Here you need to put the final uppercase letter option of this problem into \\boxed{}"
lcb_start = "You will be given a question (problem specification) and will generate a correct Python program that matches the specification and passes all tests.\n\n"  # noqa: E501
lcb_code = "\n\nRead the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n```python\n# YOUR CODE HERE\n\""  # noqa: E501
submit = "\nBefore sumbit your code, you can utilize tools to check the correctness of your code, once you make sure the current code is correct, do not call the tools again and submit your code within ```python\n# YOUR CODE HERE\n```."  # noqa: E501
units_2 = "\nDo not put units of the final answer inside \\boxed{}. The content of \\boxed{} should be the numerical value of the final answer only, without any units."  # noqa: E501
units_skywork = "\nDo not put units of the final answer inside \\boxed{}. The content of \\boxed{} should be the final numerical value of the final answer only, without any units."  # noqa: E501

Q = "Find the number of ordered pairs."
TESTS = {"inputs": ["1 2\n"], "outputs": ["3\n"]}


def verl_row(source):
    return {"data_source": source, "prompt": [{"role": "user", "content": Q}], "ability": "math",
            "reward_model": {"ground_truth": "7", "style": "rule"}, "extra_info": {"index": 0}}


ROWS = [  # (data source, the row, the prompt the original builds)
    ("AIME2024", {"data_source": "AIME2024", "Problem": Q, "Answer": 7},  # map_fn, 2024 columns
     math_prompt_1 + Q + math_prompt_2 + agent_prompt + answer_format),
    ("AIME2025", {"data_source": "AIME2025", "problem": Q, "answer": "7"},  # map_fn, 2025 columns
     math_prompt_1 + Q + math_prompt_2 + agent_prompt + answer_format),
    ("math_dapo", verl_row("math_dapo"), Q + units_2),  # map_fn2
    ("mega-science", verl_row("mega-science"), Q + units_2),  # map_fn2
    ("gpqa_diamond", {"data_source": "gpqa_diamond", "problem": Q, "solution": "C", "domain": "Chemistry"},  # gpqa
     "Analyze and solve the following Chemistry problem step by step. \n\n" + Q + math_prompt_2 + agent_prompt
     + answer_format + gpqa_letter),
    ("LiveCodeBench_v6", {"data_source": "LiveCodeBench_v6", "problem": Q, "ability": "code",  # map_lcb
                          "reward_model": json.dumps({"ground_truth": TESTS}), "extra_info": json.dumps({"index": 3})},
     lcb_start + Q + "\nHere are some input and output examples of the expected code:\nInput:" + str(TESTS["inputs"])
     + "\nOutput:\n" + str(TESTS["outputs"]) + agent_prompt + lcb_code + submit),
    ("skywork_code", verl_row("skywork_code"), Q + agent_prompt + submit),  # map_fn_skywork, "code" in the source
    ("Code_X", verl_row("Code_X"),  # map_fn_skywork: "Code" is not "code" (case-sensitive), so the math branch
     math_prompt_1 + Q + math_prompt_2 + agent_prompt + answer_format + units_skywork),
    ("deepscaler", verl_row("deepscaler"),  # map_fn_skywork, any other source: the math branch
     math_prompt_1 + Q + math_prompt_2 + agent_prompt + answer_format + units_skywork),
]


@pytest.mark.parametrize("source, row, want", ROWS, ids=[r[0] for r in ROWS])
def test_each_data_source_gets_the_original_prompt(tmp_path, source, row, want):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (p,) = data.load_rl_data(str(path))
    assert p["prompt_messages"] == [{"role": "user", "content": want}]
    assert p["source"] == source


def test_the_table_names_every_source_the_original_tests_for():
    # the names in the original's if/elif chain (and the substring its fallback tests), each a row above
    original = {"AIME2025", "AIME2024", "math_dapo", "mega-science", "gpqa_diamond", "LiveCodeBench_v6"}
    names = {r[0] for r in ROWS}
    assert original <= names and any("code" in n for n in names - original)
    assert any("code" not in n for n in names - original)
