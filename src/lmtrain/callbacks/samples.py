"""`TextSamples`: completions of fixed prompts at each validation, in `samples.txt` and W&B.

Reading what a model writes catches what a loss curve hides (repetition, a broken tokenizer, a
corpus that is not what you think). Generation uses transformers' `generate` with the KV cache on
rank 0 only, after validation, so it costs a small, fixed time per validation (measured in the
README) and never touches the training step. Samples are a side feature: a prompt the tokenizer
cannot encode, or one that fills the context, is refused before training starts, and any failure
while sampling is a warning, never the end of a run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lmtrain.callbacks.sample_rows import (
    BLOCK_HEADER,
    block_text,
    blocks_up_to,
    rows_up_to,
    wandb_carries,
)
from lmtrain.errors import LMTrainError
from lmtrain.models.generation import generate_text, prompt_problem, quote, sequence_length
from lmtrain.models.hf import context_length
from lmtrain.utils.checks import Problems
from lmtrain.utils.config_checks import check_samples
from lmtrain.utils.io import atomic_write

log = logging.getLogger(__name__)

COLUMNS = ["step", "prompt", "completion"]


class TextSamples(L.Callback):
    """Generate a completion for each prompt after every `every_n_val`-th validation.

    Each time, a block headed by the global step is appended to `<dirpath>/samples.txt`, and the
    new rows go to every WandbLogger as the table `samples` (columns step, prompt, completion).
    A standalone `trainer.validate` (the final validation of `lmtrain.train`) samples unless the
    last block is already of this step (the same weights), so the file ends with the final
    model's text, once.

    The table is a wandb INCREMENTAL table: each validation logs only its own rows (one small
    increment file and artifact), and W&B shows all increments as one table. Re-logging every
    row so far, as immutable tables need, would grow each log with the length of the run. A
    resumed run's table starts with the rows samples.txt holds up to the resumed step, unless
    wandb carries the earlier increments itself (an online resume): offline, it did not, and the
    rows logged before the interruption were missing from the table.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        dirpath: str | os.PathLike[str],
        max_new_tokens: int = 120,
        temperature: float = 0.8,
        top_k: int | None = 50,
        every_n_val: int = 1,
        filename: str = "samples.txt",
        cpu_threads: int | None = 1,
    ) -> None:
        """`cpu_threads`: torch threads while sampling on a CPU (None keeps torch's setting).

        A one-token decode step is too little work to split across threads: on this project's
        shared 2-core machine, two threads made sampling 10x slower than one (gpt2_tiny 50 vs 5
        ms per token, GPT-2 124M 480 vs 84 ms), as threads wait on each other at every op.

        The settings are checked as the command line checks `samples.*` (`check_samples`):
        built from Python, a string of prompts was sampled one character each, and a
        temperature or token count of 0 only warned at each validation, leaving no samples.
        """
        if isinstance(prompts, Sequence) and not isinstance(prompts, (str, bytes)):
            prompts = list(prompts)  # a tuple, or Hydra's ListConfig
        settings = {"prompts": prompts, "max_new_tokens": max_new_tokens, "top_k": top_k}
        settings |= {"temperature": temperature, "every_n_val": every_n_val}
        problems = Problems()
        check_samples(settings, "samples", problems)
        problems.raise_if_any()
        self.prompts = list(prompts)
        self.path = Path(dirpath) / filename
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.every_n_val = every_n_val
        self.cpu_threads = cpu_threads
        self._tables: dict[int, Any] = {}  # id(WandbLogger) -> its incremental wandb.Table
        self._validations = 0  # in-training validations so far, across resumes (state_dict)
        self._sampled_step: int | None = None  # the global step of the last block written
        self._resumed = False  # fit restored a checkpoint (a new run's file is not its own)
        self._resumed_at: int | None = None  # the step it restored (a table's first rows)
        self._new_file = False  # a new run's first block replaces the file it finds
        self._fits = 0  # a second fit in one process (Python) goes on with the first one's file

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a prompt that could never be sampled, before the first step.

        Found at the first validation instead, it would end the run before any checkpoint was
        saved. Every rank checks (the same prompts, the same answer), so all of them stop.
        """
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None:
            return
        context = context_length(pl_module.model.config)
        for prompt in self.prompts:
            problem = prompt_problem(tokenizer, prompt, context)
            if problem is not None:
                raise LMTrainError(
                    f"samples.prompts: {quote(prompt)} {problem.reason}: pass {problem.fix} "
                    "in samples.prompts=[...], or turn samples off with callbacks.text_samples=null"
                )
        if stage == "fit" and self.prompts and sharded(trainer):
            # Once, here: at each validation it came as often as the run validated.
            rank_zero_warn("text_samples: no samples under FSDP; use lmtrain.generate afterwards")
        elif stage == "fit":
            self._warn_past_trained_windows(trainer, pl_module, tokenizer)

    def _warn_past_trained_windows(
        self, trainer: L.Trainer, pl_module: L.LightningModule, tokenizer: Any
    ) -> None:
        """Warn when a sample runs past the windows a from-scratch model trains on.

        Positions past data.block_size never get a gradient, so the samples' text there is
        garbage, and a reader takes it for the model's (as `lmtrain.generate` warns). A
        pretrained model saw longer text than its fine-tuning windows: not warned.
        """
        block_size = getattr(trainer.datamodule, "block_size", None)
        if getattr(pl_module.hparams, "pretrained", None) or not isinstance(block_size, int):
            return
        config = pl_module.model.config
        lengths = [sequence_length(tokenizer, config, p, self.max_new_tokens) for p in self.prompts]
        prompt_tokens, total = max(lengths, key=lambda length: length[1], default=(0, 0))
        if total <= block_size:
            return
        fix = f"samples.max_new_tokens={block_size - prompt_tokens} or fewer"
        if prompt_tokens >= block_size:
            fix = f"samples.prompts shorter than {block_size} tokens"
        rank_zero_warn(
            f"samples.max_new_tokens={self.max_new_tokens}: a sample runs to {total} tokens, "
            f"past the {block_size}-token windows the model trains on (data.block_size="
            f"{block_size}); positions past them get no gradient, so the samples' text there is "
            f"garbage: pass {fix}, or a larger data.block_size"
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A new run starts its own file: with `overwrite_run=true` its blocks went after the old
        run's, two `=== step 2 ===` in one file (a run resumed from another run's checkpoint is
        taken for a resume of this folder's run). A resumed run drops the blocks written after the
        step it resumes at: a run killed after a validation's samples and before the checkpoint
        that follows them validates again, and its file had that validation's block twice."""
        self._new_file = not trainer.ckpt_path and self._fits == 0
        self._fits += 1
        self._resumed_at = trainer.global_step if trainer.ckpt_path else None
        if trainer.ckpt_path and trainer.is_global_zero and self.path.is_file():
            text = self.path.read_text()
            kept = blocks_up_to(text, trainer.global_step)
            if kept != text:
                with atomic_write(self.path) as f:
                    f.write(kept)

    @property
    def state_key(self) -> str:
        """One state per samples file (by its name: a run folder moved before a resume keeps
        it): two TextSamples writing different files, each with its own prompts, keep their own
        counts, where the class name alone made them one key, which Lightning refuses."""
        return f"{type(self).__qualname__}{{'filename': {self.path.name!r}}}"

    def state_dict(self) -> dict[str, Any]:
        """The validation count goes in the checkpoint: a resumed run counting from 0 sampled
        other validations than an uninterrupted run (`every_n_val` > 1)."""
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint of an older lmtrain holds no count (Lightning then calls nothing): the
        count starts at 0, as it did."""
        self._validations = int(state_dict.get("validations", 0))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resume with no step left to train calls no `on_train_start`: its step is this."""
        self._resumed = bool(trainer.ckpt_path)
        if self._resumed and self._resumed_at is None:
            self._resumed_at = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.prompts:
            return
        standalone = trainer.state.fn == TrainerFn.VALIDATING
        if not standalone:  # the N-th, 2N-th, ... validation, as Lightning's every_n_epochs
            self._validations += 1
            if self._validations % self.every_n_val:
                return
        if standalone and self._sampled(trainer.global_step):
            return
        val_loss = trainer.callback_metrics.get("val/loss")
        if val_loss is not None and not torch.isfinite(val_loss):
            return  # a diverged model has no distribution to sample from
        if sharded(trainer):  # warned of at setup
            return
        if not trainer.is_global_zero:
            return
        try:
            self.sample(trainer, pl_module)
        except Exception as err:  # samples are a side feature: they never end a run
            log.warning(
                "text_samples: no samples at step %d (%s: %s); the run goes on",
                trainer.global_step,
                type(err).__name__,
                err,
            )

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Generate, append the block to the file, and log the table."""
        step = trainer.global_step
        start = time.perf_counter()
        threads = torch.get_num_threads()
        if self.cpu_threads and pl_module.device.type == "cpu":
            torch.set_num_threads(self.cpu_threads)
        # Sampling draws from a copy of the RNG state: a run trains the same with or without it.
        device = pl_module.device
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                rows = [[step, p, self.complete(pl_module, p)] for p in self.prompts]
        finally:
            torch.set_num_threads(threads)
        # The tables first: a resumed run's first rows are read from the file before this block.
        try:
            tables = [
                (lg, self._table_for(lg)) for lg in trainer.loggers if isinstance(lg, WandbLogger)
            ]
        except Exception as err:  # the file's block is written all the same
            name = type(err).__name__
            log.warning("text_samples: no W&B table at step %d (%s: %s)", step, name, err)
            tables = []
        block = block_text(step, rows)
        self._append(block)
        self._sampled_step = step
        seconds = time.perf_counter() - start
        text = block.removesuffix("\n\n")
        log.info("Samples at step %d in %.2fs (%s):\n%s", step, seconds, self.path, text)
        for logger, table in tables:
            for row in rows:
                table.add_data(*row)
            # Only the rows added since the table's previous log are written (log_mode).
            logger.log_metrics({"samples": table}, step=step)

    def _table_for(self, logger: WandbLogger) -> Any:
        """The incremental table logged to `logger`'s run (wandb ties one to a single run); a
        resumed run's starts with the file's rows up to the resumed step (`sample_rows`)."""
        if id(logger) not in self._tables:
            import wandb  # a WandbLogger is in use: wandb is installed

            table = wandb.Table(columns=COLUMNS, log_mode="INCREMENTAL")
            step, new = self._resumed_at, self._new_file or not self.path.is_file()
            if step is not None and not new and not wandb_carries(logger.experiment, "samples"):
                for row in rows_up_to(self.path.read_text(), step, self.prompts):
                    table.add_data(*row)
            self._tables[id(logger)] = table
        return self._tables[id(logger)]

    def complete(self, pl_module: L.LightningModule, prompt: str) -> str:
        """One completion of `prompt` (without the prompt), sampled with the callback's settings."""
        (text,) = generate_text(
            pl_module.model,
            pl_module.tokenizer,
            prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
        )
        return text[len(prompt) :]

    def _sampled(self, step: int) -> bool:
        """Whether these weights were sampled: by the in-training validation at this step, or,
        in a resumed run, by its final validation before a kill (it trains no step then). The
        file is read for the final validation only."""
        return step == self._sampled_step or (self._resumed and step == self._last_block_step())

    def _last_block_step(self) -> int | None:
        """The step of the file's last block (None: no file, or no block)."""
        text = self.path.read_text() if self.path.is_file() else ""
        steps = [int(match[1]) for match in BLOCK_HEADER.finditer(text)]
        return steps[-1] if steps else None

    def _append(self, text: str) -> None:
        """Append by rewriting the whole file atomically (`atomic_write`): never half a file."""
        old = self.path.read_text() if self.path.is_file() and not self._new_file else ""
        self._new_file = False
        with atomic_write(self.path) as f:
            f.write(old + text)


def sharded(trainer: L.Trainer) -> bool:
    """Whether the model is sharded (FSDP): a sharded forward all-gathers parameters from every
    rank, and rank 0 generating alone would wait for the others forever. Sample from the
    consolidated checkpoint instead."""
    return isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy))
