"""Sample from a trained model: `python -m lmtrain.generate ckpt_path=<.ckpt or folder> prompt=...`.

The model and tokenizer come from a Lightning checkpoint or an exported folder (the same loader as
eval and export), and text comes from transformers' own `generate` through `generate_text`, the
function the training samples use. stdout gets the prompt plus completion and nothing else; logs
and progress go to stderr, so `python -m lmtrain.generate ... > out.txt` holds only text.
"""

from __future__ import annotations

from lmtrain.utils import gc_pause, import_env

# Before the libraries' imports read RANK and LOCAL_RANK as numbers (lmtrain.utils.import_env).
import_env.exit_on_unreadable_rank()

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import logging
    import sys
    from pathlib import Path

    import hydra
    import lightning as L
    import torch
    from omegaconf import DictConfig
    from transformers.utils import logging as hf_logging

    from lmtrain.errors import LMTrainError
    from lmtrain.models.checkpoint import LoadedModel, load_model, resolve_model_path
    from lmtrain.models.generation import (
        generate_text,
        new_token_budget,
        prompt_ids,
        prompt_problem,
        quote,
        sequence_length,
    )
    from lmtrain.models.hf import context_length
    from lmtrain.utils.composed_config import resolved_run_folder
    from lmtrain.utils.config_checks import check_generate_config
    from lmtrain.utils.group_overrides import refuse_null_groups
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line
    from lmtrain.utils.task import task_wrapper

log = logging.getLogger(__name__)

# torch.multinomial's refusal of next-token probabilities that hold inf or nan (CPU and CUDA).
SAMPLING_FAILURE = "probability tensor contains either"
# Below it, logits of ordinary size (tens) divided by the temperature pass float32's 3.4e38.
TINY_TEMPERATURE = 1e-30

# generation_config.json keys that change which token is chosen, beyond lmtrain's own (do_sample,
# temperature, top_k, top_p and the lengths): transformers' logits processors and strategies.
TOKEN_CHOICE_KEYS = frozenset(
    {
        "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
        "bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
        "forced_bos_token_id", "forced_eos_token_id", "min_length", "min_new_tokens",
        "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h", "num_beams",
        "num_beam_groups", "diversity_penalty", "length_penalty", "penalty_alpha",
        "dola_layers", "guidance_scale", "renormalize_logits", "remove_invalid_values",
        "exponential_decay_length_penalty", "stop_strings", "watermarking_config",
        "token_healing", "max_time",
    }
)  # fmt: skip


@task_wrapper
def generate(cfg: DictConfig) -> list[str]:
    """Print `cfg.num_samples` completions of the prompt to stdout; return them."""
    resolved_run_folder(cfg)  # first: a composed config without it in one line that says so
    check_generate_config(cfg)  # every bad setting at once, before loading anything
    device = pick_device(cfg.device)  # a cuda that is not there, before the model loads
    path = resolve_model_path(cfg.ckpt_path, cfg.paths.output_dir)
    prompt = read_prompt(cfg.get("prompt"), cfg.get("prompt_file"))
    hf_logging.disable_progress_bar()  # "Loading weights" bars; stderr, but noise all the same
    loaded = load_model(path)
    problem = prompt_problem(loaded.tokenizer, prompt, context_length(loaded.model.config))
    if problem is not None:
        given = f"prompt={quote(prompt)}"
        if cfg.get("prompt_file"):
            given = f"the prompt of prompt_file={cfg.prompt_file!r} ({quote(prompt)})"
        raise LMTrainError(f"{given} {problem.reason}: pass {problem.fix}")
    warn_if_capped(int(cfg.max_new_tokens), loaded, prompt)
    warn_past_trained_windows(int(cfg.max_new_tokens), loaded, prompt)
    warn_folder_generation_settings(loaded, path)
    model = loaded.model.to(device)
    log.info("Generating from %s on %s", path, model.device)

    L.seed_everything(cfg.seed, verbose=False)
    try:
        texts = generate_text(
            model,
            loaded.tokenizer,
            prompt,
            max_new_tokens=int(cfg.max_new_tokens),
            temperature=float(cfg.temperature),
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            greedy=cfg.greedy,
            num_samples=int(cfg.num_samples),
            stop_at_eos=cfg.stop_at_eos,
        )
    except RuntimeError as err:
        if cfg.greedy or SAMPLING_FAILURE not in str(err):
            raise
        raise sampling_refusal(cfg.temperature, err) from None
    sys.stdout.write(cfg.separator.join(texts) + "\n")
    sys.stdout.flush()
    return texts


def sampling_refusal(temperature: float, err: RuntimeError) -> LMTrainError:
    """The refusal of a sampling that torch.multinomial refused, for inf or nan probabilities.

    A temperature the checks pass (positive, finite) but tiny (1e-40) overflows float32 logits
    of ordinary size: it is named (export refuses the same value in one line,
    `lmtrain.models.export_folder`). At a usual temperature the model's own scores are not
    finite (a diverged checkpoint): that is said instead. Nothing is printed before it.
    """
    why = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    failed = f"sampling fails at temperature={temperature} ({type(err).__name__}: {why})"
    if float(temperature) < TINY_TEMPERATURE:
        return LMTrainError(
            f"{failed}: the logits divided by it overflow to inf; pass a larger temperature "
            "(0.1 to 2 is usual), or greedy=true"
        )
    return LMTrainError(
        f"{failed}: the model's next-token scores are not finite (a diverged checkpoint): "
        "check its loss with lmtrain.eval, or generate from an earlier checkpoint"
    )


def warn_if_capped(max_new_tokens: int, loaded: LoadedModel, prompt: str) -> None:
    """`generate_text` caps the new tokens at what the model's context leaves after the prompt:
    say so, rather than print fewer tokens silently."""
    prompt_tokens = prompt_ids(loaded.tokenizer, prompt).shape[1]
    budget = new_token_budget(loaded.model.config, prompt_tokens, max_new_tokens)
    if budget < max_new_tokens:
        log.warning(
            "max_new_tokens=%d capped at %d: the model's context is %d tokens, %d of them the "
            "prompt's",
            max_new_tokens,
            budget,
            context_length(loaded.model.config),
            prompt_tokens,
        )


def warn_past_trained_windows(max_new_tokens: int, loaded: LoadedModel, prompt: str) -> None:
    """Warn when the text runs past the windows a model trained from scratch saw (its run's
    data.block_size), as lm-eval's context does (`lmtrain.benchmarks.tasks_context`).

    Positions past them never got a gradient (GPT-2 learns one embedding per position), and
    the text there turns to garbage with nothing said: a red team's model of 16-token windows
    lost 0.6 nats a token up to position 16, 2.2 past it. Not capped: the user asked for the
    tokens. A pretrained model (model.pretrained) saw longer text than its fine-tuning run.
    """
    model, data = (loaded.run_config.get(key) for key in ("model", "data"))
    if not (isinstance(model, dict) and isinstance(data, dict)) or model.get("pretrained"):
        return  # a plain save_pretrained folder records no run; a fine-tune is not warned
    block_size = data.get("block_size")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        return
    prompt_tokens, total = sequence_length(
        loaded.tokenizer, loaded.model.config, prompt, max_new_tokens
    )
    if total <= block_size:
        return
    fix = f"max_new_tokens={block_size - prompt_tokens} or fewer"
    if prompt_tokens >= block_size:
        fix = f"a prompt shorter than {block_size} tokens"
    log.warning(
        "the prompt (%d tokens) and its new tokens run to %d tokens, past the %d-token windows "
        "this model was trained on from scratch (data.block_size=%d): it never saw a position "
        "past them, so the text there is likely garbage; pass %s, or train with a larger "
        "data.block_size",
        prompt_tokens,
        total,
        block_size,
        block_size,
        fix,
    )


def warn_folder_generation_settings(loaded: LoadedModel, path: str | Path) -> None:
    """Name the decoding settings a folder's generation_config.json adds to lmtrain's keys.

    transformers applies them (repetition_penalty, no_repeat_ngram_size, bad_words_ids, ...), as
    plain `model.generate` does, and with `greedy=true` too: a red team's folder with
    repetition_penalty=50 changed the greedy text with nothing said."""
    if not (Path(path).is_dir() and (Path(path) / "generation_config.json").is_file()):
        return  # a .ckpt: the model's config, no file of settings to name
    extra = {
        key: value
        for key, value in loaded.model.generation_config.to_diff_dict().items()
        if key in TOKEN_CHOICE_KEYS
    }
    if extra:
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(extra.items()))
        log.warning(
            "%s's generation_config.json also sets %s, which transformers applies to every "
            "token (greedy=true too): edit or remove them there to decode without them",
            path,
            settings,
        )


def read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    """The prompt text: `prompt_file`'s contents when set, else `prompt`.

    The file is read as training reads a corpus (`lmtrain.data.corpus.open_text`): a leading
    byte order mark dropped (Windows editors write one; kept, it reached the model as three byte
    tokens it never trained on, or was refused by a char tokenizer) and line ends read as \\n.
    """
    if prompt_file:
        path = Path(prompt_file).expanduser()
        given = f"prompt_file={prompt_file!r}"
        if path.is_dir():
            raise LMTrainError(f"{given} is a folder: pass a UTF-8 text file inside it")
        if not path.exists():
            raise LMTrainError(f"{given} does not exist: pass a UTF-8 text file")
        try:
            raw = path.read_bytes()  # whole, so that a bad byte's offset is the file's
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            skipped = len(raw) - len(err.object)  # the byte order mark the codec stepped over
            raise LMTrainError(
                f"{given} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                f"{err.start + skipped}): save it as UTF-8 or pass prompt=<text>"
            ) from None
        except OSError as err:
            raise LMTrainError(
                f"{given} cannot be read ({err.strerror}): check its permissions "
                "or pass another text file"
            ) from None
        return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines
    return "" if prompt is None else str(prompt)


def pick_device(device: str) -> torch.device:
    """`auto` is cuda when there is one, else cpu; an explicit cuda without one is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LMTrainError(f"device={device!r} but no CUDA device is visible: pass device=cpu")
    index = torch.device(device).index if device.startswith("cuda") else None
    if index is not None and index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise LMTrainError(
            f"device={device!r} but {count} CUDA device(s) are visible: pass cuda:0 to "
            f"cuda:{count - 1}, or cuda"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise LMTrainError("device='mps' but this torch has no usable MPS device: pass device=cpu")
    return torch.device(device)


@hydra.main(version_base="1.3", config_path="configs", config_name="generate")
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        refuse_null_groups(sys.argv[1:])  # `logger=null` was a traceback inside Hydra
        main()
