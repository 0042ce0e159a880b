#!/usr/bin/env bash
# Wheels that scripts/gpu_check.sh installs on a GPU machine that reaches no package index, beside
# the machine's own torch, Lightning and transformers (Python 3.12 there). Written to .whl/, which
# git ignores; carry that folder with the check. The GPU check logs to CSV, so W&B is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1
# omegaconf's parser runtime exists as a source archive only (pure Python: it builds offline).
python3 -m pip download --quiet --no-deps --no-binary=:all: -d .whl antlr4-python3-runtime==4.9.3
ls .whl
