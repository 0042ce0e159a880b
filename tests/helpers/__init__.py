"""What the tests share, one concept per module; test files import from here, never from each
other.

- `compose`: the one function that composes a config from `configs/` as the CLI would, and the
  one list of overrides that makes a training run tiny (`TINY`; its model part `TINY_GPT2`, or
  `TINY_LLAMA` in its place).
- `cli`: the entry points run as a user runs them (`run_cli`), the overrides of a tiny CLI run
  (`tiny_cli`), a sweep of tiny runs (`run_sweep`), and what an offline W&B run
  recorded.
- `corpora`: the text the tests write (word-list documents, a play, documents laid out to trip
  a pipeline up, in several formats) and readers of what the data pipeline made of it.
- `runs`: tiny models trained, exported and evaluated in-process, and reloaded without lmtrain.
- `killed_runs`: runs in subprocesses that are killed and resumed, and the check that they end
  as an uninterrupted run does.
- `faults`: callbacks, a CheckpointIO and a data source that make a real run fail, diverge,
  stall or slow down on cue (added to a run like any callback or plugin).
- `sharded_runs`: FSDP and DDP runs on gloo processes compared with one process, and the
  callbacks and strategy that stall or pause them for a kill.
- `metric_probes`: a callback that records what a real run's gradients were, and a runner of
  functions on two gloo ranks, for checking logged metrics against a reference.
- `pretrained`: a tiny random GPT-2 and its BPE saved as a hub model would be.
- `samples`: a run that writes text samples, and samples.txt read back.
- `assertions`: what a refused command must look like: one `error:` line, no traceback.
- `scripts`: the benchmark scripts run as a user runs them (`run_script`) or loaded as modules.
- `environment`: the environment each test and its commands start from (the session's).
"""

from __future__ import annotations

from pathlib import Path

# The repository root: the working directory of every subprocess, where `configs/` lives.
ROOT = Path(__file__).resolve().parents[2]
