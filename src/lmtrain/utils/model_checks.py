"""Checks of the model settings of a training config (`model.*`), before any work: each
problem is one line in `problems` (see `lmtrain.utils.config_checks.check_train_config`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import transformers
from transformers.activations import ACT2CLS
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from lmtrain.errors import no_causal_lm
from lmtrain.utils.checks import Problems, names_local_path
from lmtrain.utils.model_config_keys import fresh_model_key_problems, settings_elsewhere
from lmtrain.utils.optimizer_checks import check_optimization
from lmtrain.utils.rope_checks import rope_head_problems

log = logging.getLogger(__name__)
# Width / head pairs of the HF configs we ship (GPT-2, Llama): the width must split into heads,
# and Llama's query heads into equal groups, one per key/value head (grouped-query attention: a
# traceback at the first step otherwise).
HEAD_SPLITS = (
    ("n_embd", "n_head"),
    ("hidden_size", "num_attention_heads"),
    ("num_attention_heads", "num_key_value_heads"),
)
# model.config keys that name an activation, looked up in transformers' table when the model is
# built (after data preparation): an unknown name was a KeyError there.
ACTIVATION_KEYS = ("activation_function", "hidden_act")
# model.config keys whose impossible values give a model that is NaN from its first forward
# (a negative norm epsilon, a negative RoPE base), caught only once it is built, after data
# preparation, or at the first step: (key ending, lower bound, bound excluded, an example).
FINITE_MODEL_KEYS = (
    ("_eps", 0, False, "1e-05"),  # rms_norm_eps, layer_norm_eps: 0 trains
    ("_epsilon", 0, False, "1e-05"),  # GPT-2's layer_norm_epsilon
    ("rope_theta", 0, True, "10000.0"),
    ("initializer_range", 0, False, "0.02"),
)
# model.config keys that hold RoPE's settings as a mapping (transformers 5 reads either).
ROPE_KEYS = ("rope_scaling", "rope_parameters")
# model.attn_implementation values whose support a transformers model class declares with a flag,
# which transformers reads as it builds the model (PreTrainedModel.get_correct_attn_implementation),
# after data preparation: GPT-2 has no flex_attention path. Flash attention also depends on the
# installed packages and kernels, so it is left to the build.
ATTENTION_FLAGS = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}


def check_model(model: dict[str, Any], problems: Problems, max_steps: Any = None) -> None:
    """Yes/no and number settings, the optimizer and schedule, a local `pretrained` folder,
    activation names and head splits."""
    # Yes/no settings read by truthiness: `model.freeze.embeddings=no` froze the embeddings.
    problems.boolean("model.compile", model.get("compile", False))
    freeze = model.get("freeze")
    if isinstance(freeze, Mapping) and "embeddings" in freeze:
        problems.boolean("model.freeze.embeddings", freeze["embeddings"])
    if isinstance(freeze, Mapping) and "first_n_blocks" in freeze:  # `true` froze one block
        problems.integer("model.freeze.first_n_blocks", freeze["first_n_blocks"], 0)
    check_optimization(model, problems, max_steps)  # AdamW or Muon's parts, and schedules
    # t5 and other encoder-decoders were refused as the model was built, after tokenizing.
    model_type = model.get("model_type")
    known = isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES
    if (
        known
        and model.get("pretrained") is None
        and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    ):
        problems.add(str(no_causal_lm(f"model.model_type={model_type!r}")))
    # A missing folder was named as data.tokenizer.name (its tokenizer is read first).
    pretrained = model.get("pretrained")
    if "model_type" in model and model_type is None and pretrained is None:
        # From Python, the module's default (gpt2) fills it; from a config, a model of the
        # config's sizes would have been built as another architecture than meant.
        problems.add(
            "model.model_type=null and model.pretrained=null name no model: set "
            "model.model_type (gpt2, llama, ...) or model.pretrained"
        )
    check_pretrained_is_text(pretrained, problems)
    local = isinstance(pretrained, str) and names_local_path(pretrained)
    named = isinstance(pretrained, str) and bool(pretrained)
    refused = named and check_not_a_run(pretrained, problems)  # lmtrain.train's files
    if local and not refused and not Path(pretrained).expanduser().is_dir():
        problems.add(
            f"model.pretrained={pretrained!r} is not a folder: pass the folder that "
            "save_pretrained or lmtrain.export wrote, or a Hugging Face hub id"
        )
    check_attention(model, problems)
    config = model.get("config") or {}
    if not isinstance(config, Mapping):
        config = {}
    # dtype, attn_implementation: other settings'; a misspelt key was kept and did nothing.
    problems.extend(settings_elsewhere(config))
    if not pretrained and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:  # else refused above
        problems.extend(fresh_model_key_problems(model_type, config))
    for key, value in config.items():
        if key in ACTIVATION_KEYS and isinstance(value, str):
            problems.choice(f"model.config.{key}", value, sorted(ACT2CLS))
        elif key.endswith(("pdrop", "dropout")):
            problems.number(f"model.config.{key}", value, low=0, high=1, high_open=True)
        elif key.startswith(("n_", "num_")) or key.endswith(("_size", "_positions")):
            # null: the HF config's default (vocab_size: the tokenizer's)
            problems.integer(f"model.config.{key}", value, 1, optional=True)
    check_numeric_stability(config, problems)
    for width, heads in HEAD_SPLITS:
        w, h = config.get(width), config.get(heads)
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 and w % h:
            problems.add(
                f"model.config.{width}={w} does not split into model.config.{heads}={h} heads: "
                f"pass a {width} that is a multiple of {h}, or another {heads}"
            )
    if not pretrained:  # a RoPE model's heads of an odd size (a folder's shapes are its own)
        problems.extend(rope_head_problems(model_type, config))


def check_pretrained_is_text(pretrained: Any, problems: Problems) -> None:
    """model.pretrained: null, or text. Hydra reads `model.pretrained=123` (a folder named 123)
    as the int 123, which every reader of the setting takes for "no path" or fails on (a
    TypeError from pathlib, after data preparation); `./123` is read as the folder."""
    if pretrained is None or isinstance(pretrained, str):
        return
    what = "a folder written by save_pretrained (or lmtrain.export) or a hub id"
    if isinstance(pretrained, int | float) and not isinstance(pretrained, bool):
        problems.add(
            f"model.pretrained={pretrained!r} is a number, not {what}: for a folder named "
            f"{pretrained}, pass model.pretrained=./{pretrained}"
        )
    else:
        problems.add(f"model.pretrained={pretrained!r:.60} is not text: pass {what}")


def check_not_a_run(pretrained: str, problems: Problems) -> bool:
    """Refuse a checkpoint file or a run folder of lmtrain.train (`.hydra/` and `checkpoints/`)
    as model.pretrained, whose weights only an export makes a folder from_pretrained reads:
    it was refused as a data.tokenizer.name without tokenizer files. Return whether refused."""
    path = Path(pretrained).expanduser()
    if path.suffix == ".ckpt" and path.is_file():
        what, checkpoint = "a checkpoint file of lmtrain.train", str(path)
    elif (path / ".hydra").is_dir() and (path / "checkpoints").is_dir():
        what, checkpoint = "a run folder of lmtrain.train", str(path / "checkpoints" / "last.ckpt")
    else:
        return False
    problems.add(
        f"model.pretrained={pretrained!r} is {what}, not a folder of save_pretrained: export "
        f"it first (python -m lmtrain.export ckpt_path={checkpoint} out_dir=<folder>) and pass "
        "that folder (lmtrain.eval and lmtrain.generate take the checkpoint itself as ckpt_path)"
    )
    return True


def tokenizer_is_a_refused_run(model: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether data.tokenizer.name is model.pretrained (as finetune_gpt2 interpolates it) and
    that is a run folder or checkpoint of lmtrain.train: `check_not_a_run`'s line says what to
    do, and the tokenizer's own (no tokenizer files) would be a second line on one mistake."""
    tokenizer = data.get("tokenizer") if isinstance(data, Mapping) else None
    name = tokenizer.get("name") if isinstance(tokenizer, Mapping) else None
    pretrained = model.get("pretrained") if isinstance(model, Mapping) else None
    return isinstance(name, str) and name == pretrained and check_not_a_run(name, Problems())


def check_attention(model: Mapping[str, Any], problems: Problems) -> None:
    """model.attn_implementation that the model's class declares it lacks (`ATTENTION_FLAGS`):
    transformers refused it only once the model was built, after the corpus was tokenized. The
    class is the one AutoModelForCausalLM builds for model.model_type, or for the model_type in
    a local model.pretrained folder's config.json; its flag is read without building it."""
    attention = model.get("attn_implementation")
    if attention not in ATTENTION_FLAGS:
        return
    model_type = model.get("model_type")
    pretrained = model.get("pretrained")
    if isinstance(pretrained, str) and pretrained:
        model_type = saved_model_type(pretrained)
    if not isinstance(model_type, str):
        return
    class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    model_class = getattr(transformers, class_name, None) if isinstance(class_name, str) else None
    if model_class is None or getattr(model_class, ATTENTION_FLAGS[attention], True):
        return
    # Never the value that failed (as lmtrain.models.hf.attention_backend): bloom has no sdpa.
    instead = "sdpa" if attention != "sdpa" and model_class._supports_sdpa else "eager"
    problems.add(
        f"model.attn_implementation={attention!r} cannot be used here ({class_name} of "
        f"transformers {transformers.__version__} has no {attention} path): pass "
        f"model.attn_implementation={instead}"
    )


def saved_model_type(folder: str) -> str | None:
    """The model_type of a local model folder's config.json; None for a hub id, a folder
    without a readable one (loading it says what is wrong), or one whose classes are its own
    code (`auto_map`), which may support what the built-in class of its type does not."""
    try:
        saved = json.loads((Path(folder).expanduser() / "config.json").read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(saved, dict) or "auto_map" in saved:
        return None
    model_type = saved.get("model_type")
    return model_type if isinstance(model_type, str) else None


def check_numeric_stability(config: Mapping[str, Any], problems: Problems) -> None:
    """Values that make the model NaN before it trains (`FINITE_MODEL_KEYS`), and a RoPE
    scaling `factor` below 1, which transformers only logs ("must be a float or int >= 1")."""
    for key, value in config.items():
        for ending, low, low_open, example in FINITE_MODEL_KEYS:
            if key.endswith(ending):
                hint = f", such as {example}"
                problems.number(
                    f"model.config.{key}", value, low, None, low_open, optional=True, hint=hint
                )
    for rope in ROPE_KEYS:
        settings = config.get(rope)
        if not isinstance(settings, Mapping):
            continue
        if "rope_theta" in settings:
            theta = settings["rope_theta"]
            hint = ", such as 10000.0"
            problems.number(f"model.config.{rope}.rope_theta", theta, 0, low_open=True, hint=hint)
        if "factor" in settings:
            stretch = " (how many times the context is stretched: 2.0 doubles it)"
            problems.number(f"model.config.{rope}.factor", settings["factor"], 1, hint=stretch)


def warn_foreign_tokenizer(model: dict[str, Any], data: dict[str, Any]) -> None:
    """Warn, once at the start, when a pretrained model trains on the ids of a tokenizer built
    for the data (data.tokenizer.kind=char or bpe): they land on unrelated rows of the pretrained
    embeddings. Not refused: a new tokenizer on pretrained weights can be meant."""
    tokenizer = data.get("tokenizer")
    kind = tokenizer.get("kind") if isinstance(tokenizer, Mapping) else None
    pretrained = model.get("pretrained")
    if isinstance(pretrained, str) and pretrained and kind not in (None, "pretrained"):
        log.warning(
            "data.tokenizer.kind=%s is not model.pretrained=%s's own tokenizer: its ids will "
            "not match the pretrained embeddings (for the model's: data.tokenizer.kind="
            "pretrained data.tokenizer.name=%s)", kind, pretrained, pretrained,
        )  # fmt: skip
    name = tokenizer.get("name") if kind == "pretrained" else None
    if isinstance(pretrained, str) and isinstance(name, str) and name != pretrained:
        ours, theirs = vocabulary(name), vocabulary(pretrained)
        if ours is not None and theirs is not None and ours != theirs:  # two local folders
            log.warning(
                "data.tokenizer.name=%s is another vocabulary than model.pretrained=%s's own "
                "tokenizer (%d tokens against %d, %d shared): its ids will not match the "
                "pretrained embeddings (for the model's: data.tokenizer.name=%s)",
                name, pretrained, len(ours), len(theirs), len(ours.items() & theirs.items()),
                pretrained,
            )  # fmt: skip


def vocabulary(folder: str) -> dict[str, Any] | None:
    """The token-to-id map of a local folder's tokenizer.json (its model's vocab, without the
    tokens added after it: a fine-tuning's new pad token is the same tokenizer), or None for a
    hub id or a folder without one: a red team's model trained on a WordPiece of other ids with
    nothing said."""
    try:
        full = json.loads((Path(folder).expanduser() / "tokenizer.json").read_text("utf-8"))
        vocab = full["model"]["vocab"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if isinstance(vocab, list):  # unigram models: [token, score] pairs, the id their position
        return {str(entry[0]): i for i, entry in enumerate(vocab) if isinstance(entry, list)}
    return vocab if isinstance(vocab, dict) else None


def check_seq_len_warmup(model: dict[str, Any], block_size: Any, problems: Problems) -> None:
    """model.seq_len_warmup: null, or `start` tokens (fewer than data.block_size) and `steps`."""
    warmup = model.get("seq_len_warmup")
    if warmup is None:
        return
    example = "model.seq_len_warmup='{start: 16, steps: 60}'"
    if not isinstance(warmup, Mapping) or set(warmup) != {"start", "steps"}:
        problems.add(f"model.seq_len_warmup={warmup!r}: pass null or {example}")
        return
    start = warmup["start"]
    problems.integer("model.seq_len_warmup.steps", warmup["steps"], 1)
    valid_start = problems.integer("model.seq_len_warmup.start", start, 1)
    if valid_start and isinstance(block_size, int) and start >= block_size:
        problems.add(
            f"model.seq_len_warmup.start={start} is not shorter than the windows "
            f"(data.block_size={block_size}): pass a smaller start, or model.seq_len_warmup=null"
        )
