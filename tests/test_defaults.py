"""Public defaults are the paper's: one table, each row a default of ours (a public function's signature, a script's
Config, a paper config file) against the original's setting and where that setting comes from.

Sources, all in the original project (YoungZ365/SOD on GitHub) unless marked "paper" (arXiv 2605.07725, its
training-settings table, which the run script follows): `run_sod.sh` / `run_sft.sh` / `run_eval_aime.sh` are
examples/SOD/{run_sod,run_sft,eval/run_eval_aime}.sh (line numbers of that file); `verl ppo` is
verl/trainer/config/_generated_ppo_trainer.yaml (the defaults run_sod.sh leaves alone), `verl sft` is
verl/trainer/config/sft_trainer.yaml, `verl grpo` verl/trainer/ppo/core_algos.py compute_grpo_outcome_advantage, `tool
config` recipe/demystify/sandbox_fusion_tool_config.yaml, `code_math` verl/utils/reward_score/livecodebench/
code_math.py. δ: the paper's run sets 0.2 (run_sod.sh l.70); the original code's default is 0.5
(verl/trainer/config/algorithm.py l.73), which no run of the paper used, so 0.2 is the default everywhere here.
"""
import inspect
import os

import pytest

import common
import eval as ev
import reward
import sod_loss
import tools
import train_sft
import train_sod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default(fn, name):
    return inspect.signature(fn).parameters[name].default


def defaults(fn, *names):
    return tuple(default(fn, n) for n in names)


def config(script, name):
    return common.parse_config(script.Config, ["--config", os.path.join(ROOT, "configs", f"{name}.py")])


SOD = {n: config(train_sod, n) for n in ("qwen3_0.6b", "qwen3_1.7b")}
SFT = {n: config(train_sft, n) for n in ("sft_qwen3_0.6b", "sft_qwen3_1.7b")}


def sod(key):
    return {getattr(c, key) for c in SOD.values()}


def sft(key):
    return {getattr(c, key) for c in SFT.values()}


TABLE = [  # (what, ours, the original's, where it comes from)
    # the SOD run: configs/qwen3_0.6b.py and configs/qwen3_1.7b.py (a set: both configs must agree)
    ("prompts per step", sod("prompts_per_step"), {64}, "paper; run_sod.sh l.84 train_batch_size"),
    ("rollouts per prompt", sod("group_size"), {16}, "paper; run_sod.sh l.86 n_resp_per_prompt"),
    ("PPO mini-batch (prompts)", sod("mini_batch_prompts"), {16}, "paper; run_sod.sh l.85 ppo_mini_batch_size"),
    ("PPO epochs", sod("ppo_epochs"), {1}, "verl ppo actor.ppo_epochs"),
    ("epochs over the prompts", sod("epochs"), {1}, "paper; run_sod.sh l.171 total_epochs"),
    ("lr", sod("lr"), {1e-6}, "paper; run_sod.sh l.82 actor_lr"),
    ("weight decay", sod("weight_decay"), {0.01}, "verl ppo actor.optim.weight_decay"),
    ("gradient clip", sod("grad_clip"), {1.0}, "verl ppo actor.grad_clip"),
    ("max tool turns", sod("max_turns"), {16}, "paper; run_sod.sh l.79 max_turns"),
    ("max prompt tokens", sod("max_prompt_len"), {2560}, "paper; run_sod.sh l.80"),
    ("max response tokens", sod("max_response_len"), {20480}, "paper; run_sod.sh l.81"),
    ("rollout temperature", sod("temperature"), {1.0}, "paper; verl ppo rollout.temperature"),
    ("rollout top_p", sod("top_p"), {1.0}, "verl ppo rollout.top_p"),
    ("eval n", sod("val_k"), {32}, "paper; run_sod.sh l.87 n_resp_per_prompt_val"),
    ("eval temperature", sod("val_temperature"), {1.0}, "paper; run_sod.sh l.153 val_kwargs.temperature"),
    ("eval top_p", sod("val_top_p"), {0.6}, "paper; run_sod.sh l.152 val_kwargs.top_p"),
    ("save every", sod("save_every"), {10}, "paper; run_sod.sh l.168 save_freq"),
    ("eval every", sod("eval_every"), {10}, "paper; run_sod.sh l.170 test_freq"),
    ("vLLM gpu_memory_utilization", sod("gpu_memory_utilization"), {0.75}, "paper; run_sod.sh l.150"),
    ("algorithm", sod("algo"), {"sod"}, "run_sod.sh l.66 stepwise_enable=True"),
    ("tool protocol", sod("protocol"), {"paper"}, "the recipe the released models saw (docs/fidelity.md)"),
    ("eps (configs)", sod("sod_eps"), {1e-6}, "paper; run_sod.sh l.68 stepwise_epsilon"),
    ("delta (configs)", sod("sod_delta"), {0.2}, "paper; run_sod.sh l.70 stepwise_delta"),
    ("c (configs)", sod("opd_coef"), {1.0}, "paper; run_sod.sh l.72 stepwise_opd_coef"),
    ("clip low / high (configs)", sod("clip_low") | sod("clip_high"), {0.2, 0.28}, "run_sod.sh l.50-51"),
    ("dual clip c (configs)", sod("clip_ratio_c"), {3.0}, "verl ppo actor.clip_ratio_c"),
    ("overlong buffer / factor (configs)", sod("overlong_buffer") | sod("overlong_penalty"), {1024, 1.0},
     "run_sod.sh l.55-56"),
    # train_sod.Config's own defaults for the algorithm
    ("Config eps, delta, c", (train_sod.Config.sod_eps, train_sod.Config.sod_delta, train_sod.Config.opd_coef),
     (1e-6, 0.2, 1.0), "paper; run_sod.sh l.68-72"),
    ("Config clip low / high", (train_sod.Config.clip_low, train_sod.Config.clip_high), (0.2, 0.28),
     "run_sod.sh l.50-51"),
    ("Config overlong buffer / factor", (train_sod.Config.overlong_buffer, train_sod.Config.overlong_penalty),
     (1024, 1.0), "run_sod.sh l.55-56"),
    # the public functions
    ("sod_weights eps, delta", defaults(sod_loss.sod_weights, "eps", "delta"), (1e-6, 0.2),
     "paper; run_sod.sh l.68, l.70"),
    ("step_stats eps, delta", defaults(sod_loss.step_stats, "eps", "delta"), (1e-6, 0.2),
     "paper; run_sod.sh l.68, l.70"),
    ("sod_advantages algo, c, eps, delta", defaults(sod_loss.sod_advantages, "algo", "opd_coef", "eps", "delta"),
     ("sod", 1.0, 1e-6, 0.2), "paper; run_sod.sh l.66-72"),
    ("sod_advantages gate beta_min, beta_max, gamma", defaults(sod_loss.sod_advantages, "beta_min", "beta_max",
                                                                "gamma"), (0.0, 1.0, 1.0),
     "docs/algorithm.md: the legacy gate spans [0, 1]; not the paper's algorithm, and run_sod.sh's legacy values "
     "(l.74-76: gamma 1.0, beta 0.0-0.10) feed a mode its stepwise_enable=True switches off"),
    ("grpo_advantages std norm, eps", (default(sod_loss.grpo_advantages, "norm_by_std"),
                                     default(sod_loss.grpo_advantages, "eps")), (True, 1e-6),
     "verl grpo norm_adv_by_std_in_grpo=True, epsilon=1e-6"),
    ("ppo_loss clip low / high / dual", defaults(sod_loss.ppo_loss, "clip_low", "clip_high", "clip_ratio_c"),
     (0.2, 0.28, 3.0), "run_sod.sh l.50-51 clip_ratio_low / clip_ratio_high; verl ppo actor.clip_ratio_c"),
    ("compute_score overlong buffer / factor", (default(reward.compute_score, "overlong_buffer"),
                                                default(reward.compute_score, "overlong_penalty")), (1024, 1.0),
     "run_sod.sh l.55-56"),
    ("code test timeout (s)", reward.CODE_TIMEOUT, 30.0, "code_math l.188 compute_score(timeout=30)"),
    ("paper tool: output chars, calls per turn", (tools.PROTOCOLS["paper"]["max_chars"],
                                                  tools.PROTOCOLS["paper"]["max_calls"]), (256, 1),
     "verl ppo rollout.multi_turn max_tool_response_length, max_parallel_calls"),
    ("paper tool: timeout (s), memory (MB)", (tools.PROTOCOLS["paper"]["timeout"],
                                              tools.PROTOCOLS["paper"]["memory_mb"]), (60.0, 2048),
     "tool config default_timeout, memory_limit_MB"),
    ("evaluate T, top_p, response tokens, turns", tuple(default(ev.evaluate, k) for k in (
        "temperature", "top_p", "max_response_len", "max_turns")), (1.0, 0.6, 20480, 16),
     "paper; run_eval_aime.sh l.60, l.62, l.116-117"),
    ("evaluate grader, shaping, overlong buffer", tuple(default(ev.evaluate, k) for k in (
        "grader", "shaping", "overlong_buffer")), ("strict", "row", 1024),
     "run_eval_aime.sh l.121; reward.py compute_score (strict boxed check, row num_turns)"),
    ("eval.py k, T, top_p", (ev.Config.k, ev.Config.temperature, ev.Config.top_p), (32, 1.0, 0.6),
     "paper; run_eval_aime.sh l.63, l.116-117"),
    ("eval.py response tokens, turns, prompt tokens", (ev.Config.max_response_len, ev.Config.max_turns,
                                                       ev.Config.max_prompt_len), (20480, 16, 4096),
     "run_eval_aime.sh l.60-62"),
    ("eval.py vLLM gpu_memory_utilization", ev.Config.gpu_memory_utilization, 0.75, "run_eval_aime.sh l.65"),
    # the SFT run: configs/sft_qwen3_0.6b.py and configs/sft_qwen3_1.7b.py
    ("SFT max length", sft("max_length"), {32768}, "paper; run_sft.sh l.46"),
    ("SFT longer conversations truncated (right)", sft("truncate"), {True}, "run_sft.sh l.47 truncation=right"),
    ("SFT batch (conversations)", sft("batch_size"), {128}, "paper; run_sft.sh l.48"),
    ("SFT micro-batch per GPU (a GPU's share on 8)", {c.batch_size // 8 for c in SFT.values()}, {16},
     "paper; run_sft.sh l.52 micro_batch_size_per_gpu (here: packed micro-batches of micro_batch_tokens)"),
    ("SFT epochs", sft("epochs"), {5}, "paper; run_sft.sh l.59"),
    ("SFT lr, warm-up, min lr", sft("lr") | sft("warmup_ratio") | sft("min_lr_ratio"), {1e-5, 0.1, 0.0},
     "verl sft optim.lr, warmup_steps_ratio; cosine to 0"),
    ("SFT weight decay, gradient clip", sft("weight_decay") | sft("grad_clip"), {0.01, 1.0},
     "verl sft optim.weight_decay, clip_grad"),
]


@pytest.mark.parametrize("what, ours, want, source", TABLE, ids=[r[0] for r in TABLE])
def test_public_default_is_the_originals(what, ours, want, source):
    assert ours == want, f"{what}: ours {ours}, the original's {want} ({source})"


def test_adam_betas_are_the_originals():
    # the optimizers are built in the scripts' main(): verl's actor AdamW betas (0.9, 0.999) (verl/workers/
    # fsdp_workers.py l.488), its SFT trainer's (0.9, 0.95) (verl sft optim.betas)
    assert "betas=(0.9, 0.999)" in inspect.getsource(train_sod.train)
    assert "betas=(0.9, 0.95)" in inspect.getsource(train_sft.main)
