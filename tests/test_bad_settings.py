"""Bad settings, as classes: every numeric and enumerated setting of each entry point is checked
before work starts and all problems come in one line; Lightning's refusals are one line; Ctrl-C
is `interrupted` with exit code 130 and leaves nothing half-written."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.generate import pick_device
from lmtrain.utils.config_checks import (
    check_eval_config,
    check_export_config,
    check_generate_config,
    check_train_config,
)
from lmtrain.utils.config_keys import EVAL_KEYS, EXPORT_KEYS, GENERATE_KEYS, TRAIN_KEYS
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import fast_dev_run_cli, run_cli, tiny_cli
from tests.helpers.compose import TINY
from tests.helpers.corpora import write_corpus


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.optimizer.lr=abc", "model.optimizer.lr='abc' is not a finite number"),
        ("trainer.precision=16-mixed", "trainer.precision=16-mixed (fp16 mixed precision) runs"),
        ("model.optimizer.lr=-1e-3", "model.optimizer.lr=-0.001 must be positive"),
        ("model.optimizer.betas=[0.9,1.5]", "model.optimizer.betas[1]=1.5 must be in [0, 1)"),
        ("model.optimizer.betas=0.9", "model.optimizer.betas=0.9 is not a pair: pass [beta1,"),
        ("model.optimizer.betas=[0.9]", "model.optimizer.betas=[0.9] has 1 value: pass two"),
        ("model.optimizer.betas=[0.9,0.95,0.99]", "betas=[0.9, 0.95, 0.99] has 3 values"),
        ("seed=1.5", "seed=1.5 is not a whole number"),
        ("data.block_size=-3", "data.block_size=-3 must be at least 1"),
        ("data.num_workers=two", "data.num_workers='two' is not a whole number"),
        ("data.tokenizer.vocab_size=12", "data.tokenizer.vocab_size=12 must be at least 257"),
        ("model.config.resid_pdrop=1.5", "model.config.resid_pdrop=1.5 must be in [0, 1)"),
        ("model.config.n_embd=31", "model.config.n_embd=31 does not split into"),
        ("model.config.n_layer=0", "model.config.n_layer=0 must be at least 1"),
        ("global_batch_size=-12", "global_batch_size=-12 must be at least 1"),
        # A misspelt samples key, with the + Hydra asks for, sat unread beside the real one.
        (
            "+samples.every_nval=2",
            "samples.every_nval is not a samples setting: did you mean samples.every_n_val?",
        ),
        # global_batch_size replaced the accumulation typed beside it, without a word.
        (
            "global_batch_size=16 trainer.accumulate_grad_batches=4",
            "global_batch_size=16 and trainer.accumulate_grad_batches=4 both set gradient",
        ),
        ("trainer.max_steps=0", "trainer.max_steps=0 trains nothing"),
        ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 must be at"),
        ("trainer.num_sanity_val_steps=abc", "trainer.num_sanity_val_steps='abc' is not a whole"),
        ("trainer.precision=bf15", "trainer.precision='bf15' is unknown"),
        ("samples.top_k=0", "samples.top_k=0 must be at least 1"),
        ("samples.temperature=0", "samples.temperature=0 must be positive"),
        ("model.seq_len_warmup={start:32,steps:10}", "start=32 is not shorter than the windows"),
        ("model.seq_len_warmup={start:0,steps:10}", "seq_len_warmup.start=0 must be at least 1"),
        ("model.seq_len_warmup={start:8,steps:1.5}", "seq_len_warmup.steps=1.5 is not a whole"),
        ("model.seq_len_warmup=16", "model.seq_len_warmup=16: pass null or"),
        ("model.seq_len_warmup={start:8}", "model.seq_len_warmup={'start': 8}: pass null or"),
        # numpy's seed range (lightning.seed_everything raised a ValueError).
        ("seed=-1", "seed=-1 must be at least 0: pass a whole number from 0 to 4294967295"),
        ("seed=4294967296", "seed=4294967296 must be at most 4294967295: pass a whole number"),
        # No step limit and no epoch limit: the schedule's length was infinity (OverflowError).
        ("trainer.max_steps=-1", "trainer.max_steps=-1 with trainer.max_epochs=-1 sets no end"),
        # Prompts: a list of strings (Hydra reads [1984] as a number; `the` was t, h, e).
        ("samples.prompts=[1984]", "samples.prompts[0]=1984 is not text: quote it, as "),
        ("samples.prompts=null", "samples.prompts=None is not a list of prompts: pass a list"),
        ("samples.prompts=the", "samples.prompts='the' is not a list of prompts"),
        # Lightning refused these after data preparation, advising four unrelated keys.
        ("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5 is a share of an epoch"),
        ("trainer.limit_val_batches=2.0", "trainer.limit_val_batches=2.0 is a share of an epoch"),
        ("trainer.val_check_interval=0.5", "needs trainer.check_val_every_n_epoch=1 (null here"),
        # An interpolation that resolves to nothing was a traceback inside this very check.
        ("model.optimizer.lr=${oops}", "model.optimizer.lr cannot be resolved (Interpolation key"),
        # The run folder's name under paths.log_dir: `..` led outside it.
        ("task_name=a/../../x", "task_name='a/../../x' is not a folder name: pass a name"),
        # Schedules: min_lr_rate=-2 drove the learning rate to 0 for half a run, silently.
        ("model.scheduler.min_lr_rate=-2", "model.scheduler.min_lr_rate=-2 must be in [0, 1]"),
        ("model.scheduler.num_warmup_steps=-5", "num_warmup_steps=-5 must be at least 0"),
        # An activation transformers does not know was a KeyError after data preparation.
        (
            "model.config.activation_function=geluu",
            "model.config.activation_function='geluu' is unknown: use one of gelu, gelu_10,",
        ),
        # A swapped optimizer or schedule kept the old one's keys: a traceback when Lightning
        # built it, after the data and the model.
        (
            "model.optimizer._target_=torch.optim.SGD",
            "model.optimizer.betas is not an argument of SGD: drop it with ~model.optimizer.betas",
        ),
        (
            "model.scheduler._target_=transformers.get_linear_schedule_with_warmup",
            "model.scheduler.min_lr_rate is not an argument of get_linear_schedule_with_warmup",
        ),
        (
            "model.scheduler._target_=transformers.get_wsd_schedule ~model.scheduler.min_lr_rate",
            "model.scheduler.num_decay_steps is not set, and get_wsd_schedule needs it: pass +",
        ),
        (
            "model.scheduler._target_=torch.optim.lr_scheduler.StepLR ~model.scheduler.min_lr_rate"
            " ~model.scheduler.num_warmup_steps +model.scheduler.step_size=3",
            "StepLR does not take num_training_steps, which lmtrain passes every schedule",
        ),
        (
            # A transformers schedule too, which the advice had named as the way out.
            "model.scheduler._target_=transformers.get_constant_schedule_with_warmup"
            " ~model.scheduler.min_lr_rate",
            "schedule: use a schedule that takes it (transformers.get_cosine_schedule_with_warmup",
        ),
        ("+model.optimizer.weight_decy=0.5", "weight_decy is not an argument of AdamW: did you"),
        ("+model.scheduler.num_warmup_step=3", "num_warmup_step is not an argument of get_cos"),
        ("~model.optimizer._partial_", "(torch.optim.AdamW) has no _partial_: true, which lm"),
        # A misspelt setting was dropped without a word.
        ("+sample.prompts=[x]", "sample is not a setting of lmtrain.train, so nothing would read"),
        # A misspelt monitor was Lightning's error at the first validation, no checkpoint saved.
        (
            "callbacks.model_checkpoint.monitor=val_loss",
            "callbacks.model_checkpoint.monitor='val_loss' is not a metric lmtrain logs: did you",
        ),
        (
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
            " +callbacks.stop.monitor=VAL-LOSS",
            "callbacks.stop.monitor='VAL-LOSS' is not a metric lmtrain logs: did you mean val/lo",
        ),
        ("optimized_metric=val_ppl", "optimized_metric='val_ppl' is not a metric lmtrain logs"),
        # Lightning filled a field no metric has with 0: best-2-0.0000.ckpt, every one of them.
        (
            "callbacks.model_checkpoint.filename='best-{step}-{val_loss:.4f}'",
            "callbacks.model_checkpoint.filename='best-{step}-{val_loss:.4f}' has the field "
            "{val_loss}, which no metric fills (Lightning would write 0): did you mean {val/loss}?",
        ),
        ("callbacks.model_checkpoint.filename='{Step}'", "{Step}, which no metric fills"),
        # A misspelt argument of a Lightning callback, found when it was built.
        (
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
            " +callbacks.stop.monitor=val/loss +callbacks.stop.patiense=3",
            "callbacks.stop.patiense is not an argument of EarlyStopping: did you mean patience?",
        ),
        # A misspelt class was found after the data and the model were built.
        (
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStoping",
            "callbacks.stop._target_='lightning.pytorch.callbacks.EarlyStoping' names nothing: "
            "lightning.pytorch.callbacks has no EarlyStoping: did you mean EarlyStopping?",
        ),
        (
            "logger=csv logger.csv._target_=lightning.pytorch.loggerz.CSVLogger",
            "logger.csv._target_='lightning.pytorch.loggerz.CSVLogger' names nothing: "
            "lightning.pytorch has no loggerz: did you mean loggers?",
        ),
        # The callbacks read these once training runs: a traceback after the data, no samples
        # with a warning at each validation, a negative MFU, a window silently made 2.
        (
            "callbacks.throughput.available_flops=abc",
            "callbacks.throughput.available_flops='abc' is not a finite number: pass a positive",
        ),
        ("callbacks.throughput.available_flops=-1", "available_flops=-1 must be positive"),
        ("callbacks.throughput.window_size=abc", "callbacks.throughput.window_size='abc' is not"),
        ("callbacks.throughput.window_size=1", "window_size=1 must be at least 2"),
        ("callbacks.text_samples.cpu_threads=abc", "text_samples.cpu_threads='abc' is not a whole"),
        (
            "callbacks.text_samples.cpu_threads=0",
            "cpu_threads=0 must be at least 1: pass a whole number of at least 1, or null",
        ),
        # W&B (the default logger) and MLflow split a string into one tag per letter; W&B
        # failed at its start on a number, and on an empty or long tag.
        ("tags=mytag", """tags='mytag' is not a list: pass 'tags=["mytag"]'"""),
        ("logger=mlflow tags=5", """tags=5 is not a list: pass 'tags=["5"]'"""),
        ("tags=[a,[b]]", "tags[1]=['b'] is not text, which W&B needs: pass a flat list"),
        (
            "tags=[a,2024]",
            """tags[1]=2024 is not text, which W&B needs: quote it, 'tags=["2024"]'""",
        ),
        (f"tags=[{'x' * 65}]", "tags[0]='xxx"),
        # A step schedule for last.ckpt with last.ckpt turned off saved nothing; 2.5 ran.
        (
            "callbacks.model_checkpoint.every_n_train_steps=3 "
            "callbacks.model_checkpoint.save_last=false",
            "every_n_train_steps=3 writes last.ckpt, which callbacks.model_checkpoint.save_last"
            "=false turns off",
        ),
        (
            "callbacks.model_checkpoint.every_n_train_steps=2.5",
            "callbacks.model_checkpoint.every_n_train_steps=2.5 is not a whole number",
        ),
        ("callbacks.model_checkpoint.save_top_k=1.5", "model_checkpoint.save_top_k=1.5 is not a"),
        # The W&B logger's own tags, set apart from `tags`: the same rules.
        (
            "logger.wandb.tags=mytag",
            """logger.wandb.tags='mytag' is not a list: pass 'logger.wandb.tags=["mytag"]'""",
        ),
        ("logger.wandb.tags=[a,2024]", "logger.wandb.tags[1]=2024 is not text"),
        # Lightning's yes/no settings read `no` as true (the bar was drawn, weights-only saves
        # made, W&B run offline); settings it compares or counts with only once it runs were
        # TypeErrors there, naming no key.
        ("trainer.enable_progress_bar=no", "trainer.enable_progress_bar='no' is not true or"),
        ("trainer.deterministic=no", "trainer.deterministic='no' is not true or false"),
        ("+trainer.min_steps=abc", "trainer.min_steps='abc' is not a whole number"),
        ("+trainer.limit_test_batches=abc", "trainer.limit_test_batches='abc' is not a finite"),
        ("+trainer.overfit_batches=2.0", "trainer.overfit_batches=2.0 is a share of an epoch"),
        ("+trainer.fast_dev_run=abc", "trainer.fast_dev_run='abc' is neither true, false nor"),
        ("callbacks.model_checkpoint.save_last=no", "model_checkpoint.save_last='no' is not true"),
        ("+callbacks.model_checkpoint.every_n_epochs=abc", "every_n_epochs='abc' is not a whole"),
        ("callbacks.model_checkpoint.mode=lowest", "model_checkpoint.mode='lowest' is unknown"),
        (
            "+callbacks.model_checkpoint.train_time_interval=30",
            "model_checkpoint.train_time_interval=30 is not a time span: pass one as",
        ),
        (
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
            " +callbacks.stop.monitor=val/loss +callbacks.stop.patience=abc",
            "callbacks.stop.patience='abc' is not a whole number",
        ),
        (
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
            " +callbacks.stop.monitor=val/loss +callbacks.stop.stopping_threshold=low",
            "callbacks.stop.stopping_threshold='low' is not a finite number",
        ),
        ("logger=csv logger.csv.flush_logs_every_n_steps=0", "flush_logs_every_n_steps=0 must be"),
        ("logger.wandb.offline=no", "logger.wandb.offline='no' is not true or false"),
        ("+logger.wandb.mode=ofline", "logger.wandb.mode='ofline' is unknown: use one of online"),
        ("logger=mlflow logger.mlflow.tags=abc", "logger.mlflow.tags='abc' is not a mapping"),
    ],
)
def test_each_bad_training_setting_names_itself(compose_cfg, override: str, fragment: str) -> None:
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(*override.split(" ")))
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data=text_files"],
            "data.source.path is not set: pass data.source.path=<file, folder or glob>",
        ),
        (
            ["data=hf_dataset"],
            "data.source.path is not set: pass data.source.path=<hub id, folder or file>",
        ),
        (
            ["model=pretrained"],
            "model.pretrained is not set: pass model.pretrained=<folder or hub id>",
        ),
        (
            ["data=text_files", "data.source.path=null"],
            "data.source.path=None names no data: pass data.source.path=<file, folder or glob>",
        ),
    ],
)
def test_a_mandatory_value_left_unset_is_named(
    compose_cfg, overrides: list[str], message: str
) -> None:
    """`???` in a config: the first use, in instantiate, was a MissingMandatoryValue traceback."""
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(*overrides, tiny=False))
    assert str(err.value) == message


def test_each_part_of_muon_is_checked_as_adamw_is(compose_cfg) -> None:
    """Muon's parts were checked only when built, after the data, in words naming no key."""
    muon = "model/optimizer=muon"
    check_train_config(compose_cfg(muon))
    bad = {
        "model.optimizer.muon.optimizer.lr=abc": "model.optimizer.muon.optimizer.lr='abc' is not",
        "model.optimizer.muon.optimizer.momentum=1.5": "muon.optimizer.momentum=1.5 must be in",
        "model.optimizer.adamw.optimizer.lr=-1": "adamw.optimizer.lr=-1 must be positive",
        "+model.optimizer.muon.scheduler.num_warmup_steps=-1": "muon.scheduler.num_warmup_steps=-1",
        # 0 or fewer Newton-Schulz iterations: no orthogonalization, and no word
        "+model.optimizer.muon.optimizer.ns_steps=0": "optimizer.ns_steps=0 must be at least 1",
        "+model.optimizer.muon.optimizer.ns_steps=abc": "muon.optimizer.ns_steps='abc' is not a",
        # refused by torch only when built, after the data and the model
        "model.optimizer.muon.optimizer.adjust_lr_fn=foo": (
            "model.optimizer.muon.optimizer.adjust_lr_fn='foo' is unknown: use one of original, "
            "match_rms_adamw"
        ),
    }
    for override, fragment in bad.items():
        with pytest.raises(LMTrainError, match=re.escape(fragment)):
            check_train_config(compose_cfg(muon, override))


def test_a_misspelt_class_is_named_in_one_line_and_nothing_else(compose_cfg, caplog) -> None:
    """Hydra's get_class, used to check what a callback or the model names, logged three ERROR
    lines of its own (the import's failure) above our one `error:` line; a misspelt model or
    data source class was found only once the data were prepared."""
    for override in (
        "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStoping",
        # These two were found only after the data preparation.
        "model._target_=lmtrain.models.module.CausalLMModul",
        "data.source._target_=lmtrain.data.sources.TextFileSource",
    ):
        caplog.clear()
        with pytest.raises(LMTrainError, match="names nothing"):
            check_train_config(compose_cfg(override))
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_warm_up_as_long_as_the_run_is_warned_of(compose_cfg, caplog) -> None:
    """20 steps under a 100-step warm-up peaked at a fifth of the learning rate, silently."""
    steps = "trainer.max_steps=20"
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.trainer_checks"):
        check_train_config(compose_cfg(steps, "model.scheduler.num_warmup_steps=5"))
        assert "num_warmup_steps" not in caplog.text
        check_train_config(compose_cfg(steps, "model.scheduler.num_warmup_steps=100"))
    assert (
        "model.scheduler.num_warmup_steps=100 is not shorter than trainer.max_steps=20: the "
        "learning rate peaks at about 19% of model.optimizer.lr; lower the warm-up"
    ) in caplog.text


def test_a_long_warm_up_of_a_muon_part_is_warned_of(compose_cfg, caplog) -> None:
    """Muon's parts: a part's own warm-up went unwarned, and the shared one's warning named
    model.optimizer.lr, which a Muon run must drop (red team rev_optim, 2026-12-05)."""
    muon = ["model/optimizer=muon", "trainer.max_steps=20", "model.scheduler.num_warmup_steps=5"]
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.trainer_checks"):
        check_train_config(compose_cfg(*muon))
        assert "num_warmup_steps" not in caplog.text
        check_train_config(
            compose_cfg(*muon, "model.optimizer.muon.scheduler={num_warmup_steps:40}")
        )
        assert (
            "model.optimizer.muon.scheduler.num_warmup_steps=40 is not shorter than "
            "trainer.max_steps=20: the learning rate peaks at about 48% of "
            "model.optimizer.muon.optimizer.lr; lower the warm-up"
        ) in caplog.text
        assert "model.scheduler.num_warmup_steps" not in caplog.text  # adamw's 5 steps
        check_train_config(compose_cfg(*muon, "model.scheduler.num_warmup_steps=100"))
    assert (
        "model.scheduler.num_warmup_steps=100 is not shorter than trainer.max_steps=20: the "
        "learning rate peaks at about 19% of model.optimizer.muon.optimizer.lr and "
        "model.optimizer.adamw.optimizer.lr; lower the warm-up"
    ) in caplog.text


@pytest.mark.parametrize("max_steps", [-1, 1000])  # 1000: the epoch ends the run first
def test_a_warm_up_as_long_as_an_epoch_bound_run_is_warned_of(
    tmp_path: Path, data_dir: Path, max_steps: int
) -> None:
    """`trainer.max_epochs=1`: the run's length is known only once the data are, and a warm-up
    longer than it went unwarned (it peaked at a fraction of the lr). With max_steps set too,
    the config check compared the warm-up with max_steps only (red team rev_diff10)."""
    epoch = [f"trainer.max_steps={max_steps}", "trainer.max_epochs=1"]
    epoch.append("+trainer.limit_train_batches=8")
    long = run_cli(
        "train", *tiny_cli(tmp_path, data_dir, *epoch, "model.scheduler.num_warmup_steps=40")
    )
    assert long.returncode == 0, long.stderr[-2000:]
    assert (
        "model.scheduler.num_warmup_steps=40 is not shorter than the run's 8 steps "
        "(trainer.max_epochs=1): the learning rate peaks at about 18% of model.optimizer.lr"
    ) in long.stderr + long.stdout
    short = run_cli(
        "train",
        *tiny_cli(tmp_path / "short", data_dir, *epoch, "model.scheduler.num_warmup_steps=2"),
    )
    assert short.returncode == 0, short.stderr[-2000:]
    assert "is not shorter than" not in short.stderr + short.stdout


def test_early_stopping_with_no_validation_in_training_is_warned_of(compose_cfg, caplog) -> None:
    """The fast recipe's EarlyStopping under `trainer.limit_val_batches=0`, or with a validation
    interval longer than the run, never saw a val/loss: the run trained its whole length,
    silently."""
    fast = "experiment=shakespeare_char_fast"
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.callback_checks"):
        check_train_config(compose_cfg(fast, tiny=False))
        check_train_config(compose_cfg(fast, "trainer.limit_val_batches=0.5", tiny=False))
        check_train_config(compose_cfg("trainer.limit_val_batches=0"))  # no EarlyStopping
        assert "never stops" not in caplog.text
        # A validation every 120 batches in a run of 60 steps of 2 batches comes at its end.
        check_train_config(compose_cfg(fast, *every(120, 60, 2), tiny=False))
        assert "never stops" not in caplog.text
        check_train_config(compose_cfg(fast, "trainer.limit_val_batches=0", tiny=False))
        check_train_config(compose_cfg(fast, *every(121, 60, 2), tiny=False))
    assert (
        "callbacks.early_stopping (monitor=val/loss) never stops this run: "
        "trainer.limit_val_batches=0 runs no validation during training; validate some batches "
        "sooner, or drop it with callbacks.early_stopping=null"
    ) in caplog.text
    assert (
        "never stops this run: trainer.val_check_interval=121 batches is longer than the run "
        "(trainer.max_steps=60 x accumulate_grad_batches=2)"
    ) in caplog.text


def every(interval: int, steps: int, accumulate: int) -> list[str]:
    return [
        f"trainer.val_check_interval={interval}",
        f"trainer.max_steps={steps}",
        f"trainer.accumulate_grad_batches={accumulate}",
    ]


def test_a_swapped_optimizer_or_schedule_with_its_own_keys_passes(compose_cfg) -> None:
    """The argument check refuses only keys the new target lacks, not the swap itself."""
    sgd = ["model.optimizer._target_=torch.optim.SGD", "~model.optimizer.betas"]
    wsd = ["model.scheduler._target_=transformers.get_wsd_schedule", "~model.scheduler.min_lr_rate"]
    check_train_config(compose_cfg(*sgd, "~model.optimizer.eps"))
    check_train_config(compose_cfg(*wsd, "+model.scheduler.num_decay_steps=2"))


def test_a_swapped_optimizer_is_told_which_adamw_keys_it_keeps(compose_cfg, caplog) -> None:
    """Adam took AdamW's weight_decay=0.1 as an L2 penalty, beta2 0.99 and fused, silently."""
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.optimizer_checks"):
        check_train_config(compose_cfg())
        assert "model.optimizer._target_" not in caplog.text  # AdamW itself: nothing to say
        check_train_config(compose_cfg("model.optimizer._target_=torch.optim.Adam"))
    assert (
        "model.optimizer._target_=torch.optim.Adam is given betas=[0.9, 0.99], eps=1e-08, "
        "weight_decay=0.1, fused=True (model/optimizer=adamw's keys stay when only _target_ "
        "changes); weight_decay=0.1 is what torch.optim.Adam makes of it (Adam and SGD: an L2 "
        "term added to the gradient"
    ) in caplog.text


def test_a_metric_of_ones_own_may_be_monitored(compose_cfg, caplog) -> None:
    """With a callback of one's own, which may log it, only other spellings of val/loss,
    val/ppl, val/bpb are refused: `val/bpc` (bits per character) is one letter from val/bpb and
    passes, with a warning, as a typo (`val/los`) does. Without one, lmtrain's module logs no
    such name and the checkpoint stopped the run at its first validation: refused (rev_cb24)."""
    own = "+callbacks.mine._target_=tests.helpers.faults.SignalBeforeValidation"
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.config_keys"):
        check_train_config(compose_cfg(own, "callbacks.model_checkpoint.monitor=val/my_metric"))
        assert "is not a metric lmtrain logs" not in caplog.text
        check_train_config(compose_cfg(own, "callbacks.model_checkpoint.monitor=val/bpc"))
        check_train_config(compose_cfg(own, "callbacks.model_checkpoint.monitor=val/los"))
    assert (
        "callbacks.model_checkpoint.monitor='val/bpc' is not a metric lmtrain logs: "
        "did you mean val/bpb?"
    ) in caplog.text
    assert (
        "callbacks.model_checkpoint.monitor='val/los' is not a metric lmtrain logs: did you mean "
        "val/loss? If no module of yours logs it, Lightning stops the run at its first validation"
    ) in caplog.text
    with pytest.raises(LMTrainError) as refused:
        check_train_config(compose_cfg("callbacks.model_checkpoint.monitor=val/my_metric"))
    assert "monitor='val/my_metric' is not a metric lmtrain logs at validation" in str(
        refused.value
    )


def test_an_optimized_metric_typo_with_lmtrains_module_is_refused(compose_cfg) -> None:
    """lmtrain's own module logs no val/los: a sweep ran its whole first job, then stopped at
    the missing metric, after a warning that said Lightning would stop it (red team)."""
    for typo, meant in (("val/los", "val/loss"), ("val/bpc", "val/bpb")):
        with pytest.raises(LMTrainError) as refused:
            check_train_config(compose_cfg(f"optimized_metric={typo}"))
        assert f"optimized_metric='{typo}' is not a metric lmtrain logs: did you mean {meant}?" in (
            str(refused.value)
        )


def test_a_filename_field_of_ones_own_passes_with_a_warning(compose_cfg, caplog) -> None:
    """`{val/acc}` may be logged by a module of one's own; if not, Lightning writes 0 there."""
    override = "callbacks.model_checkpoint.filename='best-{step}-{val/acc:.3f}'"
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.filename_fields"):
        check_train_config(compose_cfg(override))
    assert (
        "callbacks.model_checkpoint.filename='best-{step}-{val/acc:.3f}' has the field "
        "{val/acc}, which is not a metric lmtrain logs: unless a module of yours logs it, "
        "Lightning writes 0 there (lmtrain's: epoch, step, val/loss, val/ppl, val/bpb, "
        "train/loss, train/grad_norm, train/clipped, tokens_seen)"
    ) in caplog.messages


def test_an_experiment_without_its_package_header_is_refused(compose_cfg, tmp_path) -> None:
    """Without `# @package _global_`, an experiment's keys sat under `experiment:` and the run
    trained the default, exit 0."""
    experiments = tmp_path / "configs" / "experiment"
    experiments.mkdir(parents=True)
    body = "task_name: my_lr\nmodel:\n  optimizer:\n    lr: 0.05\n"
    (experiments / "my_lr.yaml").write_text(body)
    (experiments / "my_lr_global.yaml").write_text("# @package _global_\n" + body)
    search = f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    check_train_config(compose_cfg(search, "experiment=my_lr_global"))
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(search, "experiment=my_lr"))
    assert str(err.value) == (
        "the experiment config my_lr.yaml has no `# @package _global_` first line, so its keys "
        "(task_name, model) landed under `experiment:`, where nothing reads them: add that line "
        "at the top of the file"
    )


def test_a_data_or_model_config_without_its_base_is_named(compose_cfg, tmp_path) -> None:
    """A config written without `defaults: [_base, _self_]` has no `_target_`: Hydra handed
    back a plain node, and the run ended in a traceback (`Missing key prepare_data`)."""
    configs = tmp_path / "configs"
    (configs / "data").mkdir(parents=True)
    (configs / "model").mkdir()
    (configs / "data" / "flat.yaml").write_text("source: {path: corpus.txt}\nblock_size: 32\n")
    (configs / "model" / "flat.yaml").write_text("model_type: gpt2\nconfig: {n_layer: 1}\n")
    search = f"hydra.searchpath=[file://{configs}]"
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(search, "data=flat", "model=flat", tiny=False))
    for fragment in (
        "data has no _target_ (the data config flat.yaml): start it with `defaults: [_base, "
        "_self_]`, as configs/data/ do",
        "model has no _target_ (the model config flat.yaml): start it with `defaults: [_base,",
        "data.source has no _target_ (the data config flat.yaml): give it the class that reads",
    ):
        assert fragment in str(err.value)


def test_a_key_of_ones_own_is_kept_and_named(compose_cfg, caplog) -> None:
    """`+learning_rate=3` (nanoGPT's name) or `+notes=...`: nothing reads it; said, not refused
    (a key for `${...}` or a note is meant)."""
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.config_keys"):
        check_train_config(compose_cfg("+learning_rate=3"))
    assert (
        "learning_rate is not a setting of lmtrain.train: it is kept in the run's config, and no "
        "code reads it, only a ${...} that names it (settings of a part go under it: "
        "model.optimizer.lr, trainer.max_steps, ...)"
    ) in caplog.text
    caplog.clear()
    # generate's settings are flat: no training parts to point to.
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.config_keys"):
        check_generate_config(compose_cfg("ckpt_path=x.ckpt", "+notes=mine", name="generate"))
    assert caplog.messages == [
        "notes is not a setting of lmtrain.generate: it is kept in the run's config, and no code "
        "reads it, only a ${...} that names it"
    ]
    caplog.clear()
    # export's decoding settings sit under generation:
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.config_keys"):
        check_export_config(
            compose_cfg("ckpt_path=x.ckpt", "out_dir=x", "+temperature=0.5", name="export")
        )
    assert caplog.messages[0].endswith(
        "(settings of a part go under it: generation.temperature, generation.top_k, ...)"
    )


def test_train_keys_are_the_entry_configs_own(compose_cfg) -> None:
    """TRAIN_KEYS lists what configs/train.yaml composes: a key added there is not refused."""
    composed = set(compose_cfg(tiny=False)) - {"hydra"}
    assert composed == set(TRAIN_KEYS)


ENTRY_KEYS = {"eval": EVAL_KEYS, "export": EXPORT_KEYS, "generate": GENERATE_KEYS}
ENTRY_CHECKS = {
    "eval": check_eval_config,
    "export": check_export_config,
    "generate": check_generate_config,
}


@pytest.mark.parametrize("name", ["eval", "export", "generate"])
def test_the_other_entry_points_keys_are_their_configs_own(compose_cfg, name: str) -> None:
    """EVAL_KEYS, EXPORT_KEYS and GENERATE_KEYS list what their configs compose (eval's data
    group is empty unless chosen)."""
    chosen = ["data=text_files"] if name == "eval" else []
    assert set(compose_cfg(*chosen, name=name)) - {"hydra"} == set(ENTRY_KEYS[name])


def test_eval_leaves_the_training_schedule_alone(compose_cfg) -> None:
    """eval only validates: the run's length and validation schedule are not its settings."""
    overrides = ["trainer.max_steps=0", "trainer.max_epochs=0", "trainer.val_check_interval=0.5"]
    check_eval_config(compose_cfg("ckpt_path=x.ckpt", *overrides, name="eval"))
    # The trainer config's own limit (training's), and a typed one that is the whole split.
    check_eval_config(compose_cfg("ckpt_path=x.ckpt", "trainer.limit_val_batches=1.0", name="eval"))


@pytest.mark.parametrize(
    ("name", "override", "fragment"),
    [
        # Each sat beside the real setting, which kept its default without a word.
        ("generate", "+max_new_token=5", "max_new_token is not a setting of lmtrain.generate, so"),
        ("eval", "+task=[hellaswag]", "task is not a setting of lmtrain.eval, so nothing would"),
        ("export", "+verfy=false", "verfy is not a setting of lmtrain.export, so nothing would"),
        # eval builds a Lightning Trainer too: its settings are checked as training's are.
        ("eval", "trainer.precision=bf15", "trainer.precision='bf15' is unknown"),
        ("eval", "trainer.enable_progress_bar=no", "trainer.enable_progress_bar='no' is not"),
        # Ignored: eval read the whole val split all the same.
        (
            "eval",
            "trainer.limit_val_batches=2",
            "trainer.limit_val_batches=2: eval reads the whole val split (its numbers compare "
            "across runs): drop it, or evaluate a smaller split (+data.source.val_fraction=<share>"
            ", or data=<a smaller corpus>)",
        ),
        ("eval", "++trainer.limit_val_batches=0.5", "trainer.limit_val_batches=0.5: eval reads"),
    ],
)
def test_a_bad_setting_of_the_other_entry_points_is_named(
    compose_cfg, name: str, override: str, fragment: str
) -> None:
    settings = ["ckpt_path=x.ckpt", *(["out_dir=x"] if name == "export" else []), override]
    with pytest.raises(LMTrainError) as err:
        ENTRY_CHECKS[name](compose_cfg(*settings, name=name))
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("entry", "override", "fragment"),
    [
        ("train", "logger=null", "pass logger=none (none at all), or one of csv, many, mlflow,"),
        ("train", "callbacks=NULL", "callbacks=NULL: a config group takes the name of one of"),
        ("generate", "+paths=null", "+paths=null: a config group takes the name of one of its"),
        ("train", "model/optimizer=null", "null is none: pass one of adamw, muon, or leave the"),
        # An empty group (configs/local/ holds no config): nothing to name.
        ("train", "local=null", "null is none: leave the override out (the group's default)"),
    ],
)
def test_a_config_group_set_to_null_is_one_line(entry: str, override: str, fragment: str) -> None:
    """`logger=null` was Hydra's ValueError with a traceback, before any lmtrain code ran."""
    assert_one_line_error(run_cli(entry, override), fragment)


def test_preemption_signals_without_brackets_are_named_as_such() -> None:
    """`callbacks.preemption.signals=SIGTERM` is a string, read letter by letter: `unknown
    signal 'S'`."""
    from lmtrain.callbacks.preemption import PreemptionCheckpoint

    with pytest.raises(LMTrainError) as err:
        PreemptionCheckpoint(signals="SIGTERM")
    assert str(err.value) == (
        "callbacks.preemption.signals='SIGTERM' is not a list: pass '[SIGTERM]'"
    )


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_generate_on_mps_without_it_is_one_line() -> None:
    with pytest.raises(LMTrainError, match=r"device='mps' but this torch has no usable MPS"):
        pick_device("mps")


@pytest.mark.parametrize("name", ["eval", "generate", "export"])
def test_the_other_entry_points_name_an_unset_checkpoint(compose_cfg, name: str) -> None:
    check = {"eval": check_eval_config, "generate": check_generate_config}
    with pytest.raises(LMTrainError) as err:
        check.get(name, check_export_config)(compose_cfg(name=name))
    assert "ckpt_path is not set: pass ckpt_path=<.ckpt file or folder>" in str(err.value)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("train", "seed"),
        ("train", "global_batch_size"),
        ("train", "overwrite_run"),
        ("train", "resume"),
        ("eval", "seed"),
        ("eval", "tasks"),
        ("generate", "seed"),
        ("export", "out_dir"),
        ("export", "overwrite"),
    ],
)
def test_a_top_level_setting_that_does_not_resolve_is_named(
    compose_cfg, name: str, key: str
) -> None:
    """Nested settings were resolved with their error caught; a top-level one was read bare,
    and `seed=${oops}` was an InterpolationKeyError traceback."""
    check = {"train": check_train_config, "eval": check_eval_config}
    check |= {"generate": check_generate_config, "export": check_export_config}
    settings = [f"{key}=${{oops}}"] + ([] if name == "train" else ["ckpt_path=x.ckpt"])
    settings += ["out_dir=x"] if name == "export" and key != "out_dir" else []
    with pytest.raises(LMTrainError) as err:
        check[name](compose_cfg(*settings, name=name))
    assert str(err.value) == (
        f"{key} cannot be resolved (Interpolation key 'oops' not found): fix the ${{...}} it "
        "holds, or pass a plain value"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_steps=-1", "trainer.max_epochs=1"],  # one epoch: the schedule spans it
        ["trainer.max_steps=-1", "model.scheduler=null"],  # no schedule to span
        ["data=shakespeare_char"],  # its null path downloads the text
        ["model.config.activation_function=gelu_new", "samples.prompts=[]"],
        # null: no MFU, torch's thread count while sampling; no tags
        ["callbacks.throughput.available_flops=null", "callbacks.text_samples.cpu_threads=null"],
        ["tags=null", "model/optimizer=muon"],
        # Only W&B needs short texts: MLflow and CSV take numbers and long tags.
        ["logger=csv", "tags=[2024]"],
        ["logger=mlflow", f"tags=[{'x' * 65}]"],
        # Lightning's other accepted forms of the settings checked above.
        ["trainer.deterministic=warn", "+trainer.fast_dev_run=3", "+trainer.overfit_batches=0.5"],
        ["callbacks.model_checkpoint.save_last=link", "+logger.wandb.mode=disabled"],
        ["trainer.val_check_interval=00:00:30:00"],  # a time span, Lightning's to parse
        # Lightning's own fields and logged metrics, with a format or without.
        ["callbacks.model_checkpoint.filename='{epoch}-{step:06d}-{val/bpb:.3f}-{train/loss}'"],
        [
            "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
            "+callbacks.stop.monitor=val/loss",
            "+callbacks.stop.min_delta=-0.01",
            "+callbacks.stop.mode=max",
            "+callbacks.model_checkpoint.train_time_interval={_target_:datetime.timedelta,"
            "minutes:30}",
        ],
    ],
)
def test_settings_next_to_the_refused_ones_still_pass(compose_cfg, overrides: list[str]) -> None:
    check_train_config(compose_cfg(*overrides))


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"device": "tpu"}, "device='tpu' is unknown"),
        ({"seed": -1}, "seed=-1 must be at least 0: pass a whole number from 0 to 4294967295"),
        ({"seed": 2**32}, "seed=4294967296 must be at most 4294967295"),
        ({"top_p": 1.5}, "top_p=1.5 must be in (0, 1]"),
        ({"max_new_tokens": "many"}, "max_new_tokens='many' is not a whole number"),
        ({"num_samples": 0}, "num_samples=0 must be at least 1"),
        # Hydra reads prompt=1.10 as the number 1.1 (and [a,b] as a list): refused, not changed.
        ({"prompt": 1.1}, "prompt=1.1 is not text: quote it"),
        ({"prompt": ["a", "b"]}, "prompt=['a', 'b'] is not text: quote it"),
        # Used to join the samples once all were drawn: a traceback that lost them.
        ({"separator": None}, "separator=None is not text: pass a quoted string"),
    ],
)
def test_each_bad_generation_setting_names_itself(settings: dict, fragment: str) -> None:
    base = {"seed": 1, "num_samples": 1, "max_new_tokens": 10, "temperature": 0.8, "top_k": 50}
    base |= {"top_p": None, "greedy": False, "device": "auto"}
    with pytest.raises(LMTrainError, match=None) as err:
        check_generate_config(OmegaConf.create(base | settings))
    assert fragment in str(err.value)


def test_eval_refuses_a_seed_numpy_refuses() -> None:
    with pytest.raises(LMTrainError) as err:
        config = {"seed": 99999999999, "data": None, "trainer": {}, "paths": {}}
        check_eval_config(OmegaConf.create(config))
    assert str(err.value) == (
        "seed=99999999999 must be at most 4294967295: "
        "pass a whole number from 0 to 4294967295, or null"
    )


def test_all_problems_at_once_in_one_line_before_any_work(tmp_path: Path) -> None:
    bad = ["model.optimizer.lr=abc", "data.block_size=-3", "seed=1.5", "samples.top_k=0"]
    data_dir = tmp_path / "data"
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *bad))
    line = assert_one_line_error(result, "4 settings need a change: (1) ")
    for key in ("seed=1.5", "data.block_size=-3", "model.optimizer.lr='abc'", "samples.top_k=0"):
        assert key in line, line
    assert not list(data_dir.glob("cache/*")), "nothing is prepared before the check"


def test_an_unset_corpus_is_one_line_before_any_work(tmp_path: Path, data_dir: Path) -> None:
    """`data=text_files` without data.source.path, from the command line."""
    result = run_cli(
        "train",
        *TINY,
        "data=text_files",
        "data.tokenizer.kind=char",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
    )
    line = assert_one_line_error(result)
    assert line == (
        "error: data.source.path is not set: pass data.source.path=<file, folder or glob>"
    )
    assert not (tmp_path / "data").exists(), "nothing is prepared before the check"


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("trainer.accelerator=gpu", "trainer=cpu runs anywhere)"),
        # The hint named the four hardware settings whatever Lightning refused.
        (
            "+trainer.gradient_clip_algorithm=abc",
            "Allowed algorithms: ['value', 'norm'].): check trainer.gradient_clip_algorithm",
        ),
        ("+trainer.max_time=abc", "DD:HH:MM:SS.): check trainer.max_time"),
        # `trainer.callbacks` is no setting: lmtrain passes the callbacks group's.
        (
            "+trainer.enable_checkpointing=false",
            "check trainer.enable_checkpointing, the callbacks (`callbacks.<name>=null` drops one)",
        ),
    ],
)
def test_a_trainer_setting_lightning_refuses_is_one_line(
    tmp_path: Path, data_dir: Path, override: str, hint: str
) -> None:
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, override))
    line = assert_one_line_error(result, "the trainer settings were refused", hint)
    assert line.endswith(hint)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["+model.config.tie_word_embeddings=no"],
            ["field 'tie_word_embeddings'", "expected bool, got str (value: 'no')"],
        ),
        (
            ["model=llama_tiny", "model.config.num_hidden_layers=1", "+model.config.mlp_bias=3"],
            ["field 'mlp_bias'", "expected bool, got int (value: 3)"],
        ),
    ],
)
def test_a_value_the_hf_config_refuses_is_one_line(
    tmp_path: Path, data_dir: Path, overrides: list[str], fragments: list[str]
) -> None:
    """transformers' configs validate their fields (huggingface_hub's strict dataclasses):
    the refusal, whose problem is on its second line, is one line naming the field and value,
    not Hydra's block of `Error in call to target` and `full_key: model`."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world, a tiny corpus line.\n" * 200)
    result = run_cli("train", *fast_dev_run_cli(corpus, tmp_path), *overrides)
    assert_one_line_error(result, "model (lmtrain.models.module.CausalLMModule)", *fragments)


@pytest.mark.slow
def test_ctrl_c_during_data_preparation_is_interrupted_and_leaves_no_cache(
    tmp_path: Path, data_dir: Path
) -> None:
    cache = tmp_path / "cache"
    slow = [
        "data.source._target_=tests.helpers.faults.SlowTextFiles",
        "+data.source.delay_s=0.5",
        "~data.source.val_fraction",
        "~data.source.text_field",
        f"data.cache_dir={cache}",
        "data.prepare_chunk_mb=0.001",
    ]
    # 12 files read 0.5 s apart: the build lasts 6 s, and the signal lands in it, not in
    # training (where Lightning's own handler would see it).
    corpus = write_corpus(tmp_path / "docs", n_docs=12, lines=20)
    overrides = tiny_cli(tmp_path, data_dir, *slow, corpus=corpus)
    command = [sys.executable, "-m", "lmtrain.train", *overrides]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(cache.glob("*.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(cache.glob("*.tmp-*")), "the build did not start"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted"
    assert not list(cache.glob("*.tmp-*")) and not [p for p in cache.iterdir() if p.is_dir()]


def test_a_pretrained_folder_that_is_not_there_is_named_as_model_pretrained(compose_cfg) -> None:
    # It was named as data.tokenizer.name (which the fine-tuning experiments set from it), once
    # the token cache was being built.
    overrides = ["model.pretrained=/nonexistent/gpt2", "data.source.path=corpus.txt"]
    cfg = compose_cfg("experiment=finetune_gpt2", *overrides, tiny=False)
    with pytest.raises(LMTrainError) as err:
        check_train_config(cfg)
    assert "model.pretrained='/nonexistent/gpt2' is not a folder: pass the folder" in str(err.value)
