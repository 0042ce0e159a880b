"""Train a causal LM: `python -m lmtrain.train [experiment=...] [key=value ...]`.

Reads top to bottom in the order a run happens: seed, data (tokenized once and cached), model
(sized from the tokenizer), callbacks and loggers, `trainer.fit`, a final validation on the
whole val split (where the text_samples callback writes the final samples), and `metrics.json`
in the run folder.
"""

from __future__ import annotations

from lmtrain.utils import gc_pause, import_env

# Before the libraries' imports read RANK and LOCAL_RANK as numbers (lmtrain.utils.import_env).
import_env.exit_on_unreadable_rank()

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import logging
    import sys
    from functools import partial
    from pathlib import Path

    import hydra
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from omegaconf import DictConfig, OmegaConf

    from lmtrain.callbacks.checkpoint import StepScheduledCheckpoint
    from lmtrain.callbacks.ended_run import EndedRun, ended_metrics, reports_step
    from lmtrain.callbacks.preemption import PreemptionCheckpoint
    from lmtrain.callbacks.resume import ExactResume
    from lmtrain.callbacks.resume_run import locate_last_elsewhere, log_resume, resume_value
    from lmtrain.callbacks.resumed_record import (
        WriteResumedRecord,
        discard_resumed_record,
        keep_record_for_final_validation,
        write_resumed_record,
    )
    from lmtrain.callbacks.row_steps import ResumedRowSteps
    from lmtrain.callbacks.run_start import RunStart, refuse_replaced_run
    from lmtrain.callbacks.same_data import SameDataOnEveryRank
    from lmtrain.callbacks.same_settings import SameSettingsOnEveryRank
    from lmtrain.callbacks.samples import TextSamples
    from lmtrain.callbacks.startup import ProcessMark, StartupClock
    from lmtrain.callbacks.training_totals import TrainingTotals
    from lmtrain.errors import LMTrainError
    from lmtrain.lightning_compat import resume_only_from_given_checkpoints
    from lmtrain.lightning_compat.epochs import cut_epoch_logged_as_running
    from lmtrain.models.checkpoint import check_same_model, resolve_ckpt_path
    from lmtrain.models.flops import flops_per_batch
    from lmtrain.models.hf import check_context, count_parameters
    from lmtrain.models.pretrained_overrides import check_pretrained_overrides
    from lmtrain.utils.checkpoint_dirpaths import refuse_foreign_checkpoint_dirs
    from lmtrain.utils.composed_config import run_config
    from lmtrain.utils.config_checks import check_train_config
    from lmtrain.utils.csv_history import CSVBatchStarts
    from lmtrain.utils.group_overrides import refuse_null_groups
    from lmtrain.utils.instantiate import (
        instantiate_callbacks,
        instantiate_loggers,
        instantiate_trainer,
    )
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line
    from lmtrain.utils.io import write_json
    from lmtrain.utils.launch import prepare_process, run_for_sweeper
    from lmtrain.utils.metric_text import short
    from lmtrain.utils.outside_records import refuse_replacing_outside_records
    from lmtrain.utils.redact import redact
    from lmtrain.utils.run_folder import (
        claim_run_folder,
        folder_key,
        released_after,
        resumes_run_in,
    )
    from lmtrain.utils.task import plain_metrics, task_wrapper
    from lmtrain.utils.train_limit import check_limit_in_whole_steps
    from lmtrain.utils.validation_interval import check_val_interval_fits_epoch

log = logging.getLogger(__name__)
IMPORTS_DONE = ProcessMark.now()  # the end of the startup's first phase, in this process


@released_after  # the run folder's lock (and an outside dirpath's) outlasts W&B's run finishing
@task_wrapper
def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by `cfg`; return its final metrics."""
    startup = StartupClock(IMPORTS_DONE)  # the time to the first step, split into phases
    startup.mark("config")  # Hydra's composition and the process set-up
    cfg = run_config(cfg)  # from Python: a dict, Hydra's node, the run folder, resume=
    check_train_config(cfg)  # every bad setting at once, before any work
    check_pretrained_overrides(cfg.model)  # model.config beside model.pretrained
    output_dir = Path(cfg.paths.output_dir)
    locate_last_elsewhere(cfg, output_dir)  # from Python: a dirpath outside the run folder
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    # One live run per run folder, and none into another run's checkpoints unless told to.
    resuming = resumes_run_in(output_dir, ckpt_path)
    overwrite = cfg.get("overwrite_run") is True
    claim_run_folder(output_dir, resuming, overwrite, folder_key(output_dir), ckpt_path)
    if resuming and ckpt_path is not None:  # not the checkpoint of a run overwrite_run replaced
        # resume= reads overwrite_run=true from the record of the run that replaced it: no leave
        typed_overwrite = overwrite and resume_value(cfg) in (None, "")
        refuse_replaced_run(output_dir, ckpt_path, folder_key(output_dir), typed_overwrite)
    # Built before any work (a refused entry costs no data preparation), and before the seed so
    # that the data and the model draw the same random numbers as ever.
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("Preparing data <%s>", cfg.data.source._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    startup.mark("data")  # from here to the previous mark: the token cache found (or built)

    log.info("Building model <%s>", cfg.model.get("pretrained") or cfg.model.model_type)
    model = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    check_context(model.model.config, cfg.data.block_size, bool(cfg.model.get("pretrained")))
    if ckpt_path is not None:
        max_steps, resume = cfg.trainer.get("max_steps"), cfg.get("resume") or None
        # The same run (its own folder's checkpoint) goes on with the same training windows.
        windows = {k: cfg.data.get(k) for k in ("block_size", "seed")} if resuming else None
        optimizer = cfg.model.get("optimizer") or {}
        check_same_model(
            ckpt_path,
            model.model.config,
            max_steps,
            resume,
            datamodule.tokenizer,
            windows,
            optimizer.get("_target_"),
            OmegaConf.to_container(cfg.model.freeze) if cfg.model.get("freeze") else None,
        )
    # Stored in checkpoints and logged to W&B: keys that name a secret, and any value that holds
    # an environment secret (WANDB_API_KEY, HF_TOKEN, ...), are replaced by "<redacted>".
    model.run_config = redact(OmegaConf.to_container(cfg, resolve=True))
    startup.mark("model")

    if not any(isinstance(c, StepScheduledCheckpoint) for c in callbacks):  # a config of one's own
        preempt = any(isinstance(c, PreemptionCheckpoint) for c in callbacks)
        log.warning(
            "No checkpoints/last.ckpt after validations: the callbacks config has no "
            "StepScheduledCheckpoint, so a kill cannot resume this run (%s): start your "
            "callbacks config with `defaults: [default]`, or pass callbacks=default",
            "a preemption's stop still saves one"
            if preempt
            else "nor can a SIGTERM: there is no PreemptionCheckpoint either",
        )
    # A checkpoint dirpath outside the run folder must not hold another run's checkpoints.
    dirpaths = [c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
    refuse_foreign_checkpoint_dirs(dirpaths, output_dir, ckpt_path, overwrite)
    # ... nor its samples or CSV logger another run's (or a user's file).
    refuse_replacing_outside_records(cfg, output_dir, resuming, overwrite)
    # Exact resume is not optional (as Lightning's own loop state is not): every rank's RNG
    # states, and the gradients of a step cut between micro-batches, go into checkpoints.
    if not any(isinstance(c, ExactResume) for c in callbacks):
        callbacks.append(ExactResume())
    callbacks.append(SameDataOnEveryRank())  # ranks on several nodes serve the same tokens
    # Train metrics and time so far, in checkpoints: a run resumed after training ended (killed
    # in the final validation) still reports them.
    totals = TrainingTotals()
    callbacks.append(totals)
    callbacks.append(startup)
    # A resumed run that had ended (EarlyStopping, max_steps) stays so; with overwrite_run, the
    # replaced run's metrics.json goes at this run's first save (see EndedRun).
    ended = EndedRun(replaced_metrics=output_dir / "metrics.json" if overwrite else None)
    callbacks.append(ended)
    # resume=: the run's .hydra/ once training starts (after EndedRun: not if it trains nothing)
    callbacks.append(WriteResumedRecord())
    callbacks.append(RunStart(output_dir, resuming))  # its id: in the folder and its checkpoints
    # logger=csv: the rows a resumed run keeps (first in the list); a run whose metrics.json
    # reports its last step had ended whole, final validation included.
    ended_whole = partial(reports_step, output_dir)
    callbacks.insert(0, CSVBatchStarts(run_dir=output_dir, ended=ended_whole))
    # Rows at the uninterrupted run's steps on resume: first, before any callback logs a row.
    callbacks.insert(0, ResumedRowSteps())
    # Each node's command line, the same settings: first, before a callback's setup collective.
    callbacks.insert(0, SameSettingsOnEveryRank(cfg))
    # W&B: named and grouped for sweeps; a resume in this run folder continues its W&B run.
    loggers = instantiate_loggers(cfg.get("logger"), run_cfg=cfg, resuming=resuming)
    if not loggers:  # Lightning's LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers)
    resume_only_from_given_checkpoints(trainer)  # never Lightning's own pick of an hpc_ckpt
    if cfg.get("global_batch_size"):
        trainer.accumulate_grad_batches = gradient_accumulation(
            cfg.global_batch_size, cfg.data.batch_size, trainer.world_size
        )
        log_validation_cadence(trainer.val_check_interval, trainer.accumulate_grad_batches)
    # The epoch's length, known from the data and the accumulation (an epoch is whole steps).
    check_val_interval_fits_epoch(trainer, datamodule)
    check_limit_in_whole_steps(trainer, datamodule)
    # Read by the throughput monitor for FLOP/s and MFU; counted once, on the meta device.
    model.train_flops_per_batch = flops_per_batch(
        model.model.config, cfg.data.batch_size, cfg.data.block_size
    )
    startup.mark("trainer")  # loggers and the trainer built, FLOPs counted
    for logger in trainer.loggers:
        logger.log_hyperparams({**model.run_config, **count_parameters(model.model)})
    startup.mark("loggers")  # W&B's run starts with its first use, here

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    # Its final validation is done when metrics.json reports this step: rank 0's file decides
    # for every rank (the validation below is collective).
    trained_nothing = ended.trained_nothing(trainer)
    stored = (
        ended_metrics(output_dir, trainer.global_step) if resuming and trained_nothing else None
    )
    stored = trainer.strategy.broadcast(stored)
    if not trained_nothing:
        write_resumed_record()  # (written at the first step already)
    elif stored is not None:  # it had ended: its overrides were never checked nor applied
        discard_resumed_record(trainer.global_step)
    else:  # stopped in its final validation, which runs below: the run's own overrides
        keep_record_for_final_validation(trainer.global_step, cfg)
    if stored is not None:
        log.info("The run had ended at step %d: its metrics.json stands", trainer.global_step)
        return stored
    train_seconds = totals.train_seconds()
    # validate() below replaces the val/ ones
    fit_metrics = {**totals.train_metrics(), **plain_metrics(trainer.callback_metrics)}

    # In-training validation may look at a subset (trainer.limit_val_batches); the reported
    # val/loss is always the whole val split, measured on the final weights. When training
    # ended on a validation of the whole split (EarlyStopping recipes), that one is it, unless
    # text samples skip some validations (the final one writes the final model's samples).
    whole_split = isinstance(trainer.limit_val_batches, float) and trainer.limit_val_batches == 1
    sampled_each = all(c.every_n_val == 1 for c in callbacks if isinstance(c, TextSamples))
    if not (whole_split and sampled_each and model.validated_at_step == trainer.global_step):
        if not trainer.fast_dev_run:  # debug=fdr: one batch here too, whatever the split's size
            trainer.limit_val_batches = 1.0
        # Its rows at the epoch training was in, not the next one a cut epoch was counted as
        with cut_epoch_logged_as_running(trainer):
            final = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        fit_metrics.update(plain_metrics(final))
    metrics = {
        **fit_metrics,
        "trainer/global_step": float(trainer.global_step),
        "time/train_s": train_seconds,
        **startup.metrics(),
    }
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        log.info("Metrics: %s", {k: short(v) for k, v in sorted(metrics.items())})
        log.info("Run folder: %s", output_dir)
    return metrics


def gradient_accumulation(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that each step sees `global_batch_size` windows."""
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step:
        raise LMTrainError(
            f"global_batch_size={global_batch_size} is not a multiple of data.batch_size "
            f"({micro_batch_size}) x devices ({world_size}) = {per_step}: pick a multiple of "
            f"{per_step}, or change data.batch_size"
        )
    return global_batch_size // per_step


def log_validation_cadence(every: int | float | None, accumulate: int) -> None:
    """One line on what `trainer.val_check_interval` means in optimizer steps, when
    `global_batch_size` makes each step several batches: it counts batches (Lightning's meaning),
    so a larger global batch validates (and saves the best checkpoint) more often per step."""
    if accumulate > 1 and isinstance(every, int) and not isinstance(every, bool):
        middle = "" if every % accumulate == 0 else ", in the middle of a step"
        log.info(
            "trainer.val_check_interval=%d counts batches: with %d batches per optimizer step "
            "(global_batch_size), a validation every %g optimizer steps%s",
            every,
            accumulate,
            every / accumulate,
            middle,
        )


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns `optimized_metric` for sweepers.

    In a multirun a job that fails or diverges scores the worst value and the sweep goes on;
    `prepare_process` covers DDP ranks > 0, torchrun and requeued SLURM jobs. With `resume=`,
    Hydra's callback `lmtrain.callbacks.resume_run.ResumeRun` has already made `cfg` the resumed
    run's config, in its folder.
    """
    prepare_process(cfg)
    log_resume(cfg)
    return run_for_sweeper(train, cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        refuse_null_groups(sys.argv[1:])  # `logger=null` was a traceback inside Hydra
        main()
