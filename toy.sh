#!/usr/bin/env bash
# The built-in toy pipeline (tiny models, CPU, no download). Filled in as the training scripts land.
set -euo pipefail
echo "toy.sh: the toy pipeline (SFT -> SOD -> eval) is not implemented yet; the installed modules are: common, data."
python data.py --toy_tokenizer out/toy/tokenizer
