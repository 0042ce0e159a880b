"""What `model._target_`, `data._target_`, `model.config` and callbacks may name.

lmtrain.train builds, checkpoints, resumes, samples from and exports `CausalLMModule` over a
Hugging Face model, fed by `TextDataModule` and its token cache: it reads their settings
(`model.model_type`, `data.source`, ...) and attributes (`model.model.config`,
`datamodule.tokenizer`). Another LightningModule or DataModule named by `_target_` ended in an
OmegaConf traceback about a missing key; a subclass works, and is the way to change them.
Lightning's LearningRateFinder sets a module attribute `lr`; lmtrain's rate is an argument of the
optimizer partial, so the finder failed inside `fit` with an AttributeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class

from lmtrain.utils.checks import Problems
from lmtrain.utils.config_keys import locate

# The group, its base class (as configs/<group>/_base.yaml names it), and what a subclass changes.
BASES = {
    "model": ("lmtrain.models.module.CausalLMModule", "the HF model, loss or optimizer"),
    "data": ("lmtrain.data.datamodule.TextDataModule", "the data, through data.source"),
}


# A Lightning callback that cannot work on CausalLMModule, and what does its job here.
LR_FINDER = "lightning.pytorch.callbacks.LearningRateFinder"


def check_targets(cfg: Mapping[str, Any], problems: Problems) -> None:
    for group, (base_path, what) in BASES.items():
        section = cfg.get(group)
        target = section.get("_target_") if isinstance(section, Mapping) else None
        if not isinstance(target, str) or target == base_path:
            continue
        cls = located(target)
        if cls is not None and not issubclass(cls, get_class(base_path)):
            problems.add(
                f"{group}._target_={target} is not a subclass of {base_path}, which "
                f"lmtrain.train builds, checkpoints and exports: subclass it to change {what}"
            )
    config = (cfg.get("model") or {}).get("config")
    if isinstance(config, Mapping) and "_target_" in config:
        problems.add(
            f"model.config._target_={config['_target_']}: model.config holds the HF config's "
            "keys (n_layer, hidden_size, ...), not an object to build: drop "
            "model.config._target_ and name the architecture with model.model_type=<type>"
        )
    callbacks = cfg.get("callbacks")
    for name, entry in callbacks.items() if isinstance(callbacks, Mapping) else ():
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        cls = located(target) if isinstance(target, str) else None
        if cls is not None and issubclass(cls, get_class(LR_FINDER)):
            problems.add(
                f"callbacks.{name}._target_={target} sets a module attribute `lr`, and lmtrain's "
                "learning rate is model.optimizer.lr: search that with a sweep "
                f"(hparams_search=optuna, or -m model.optimizer.lr=...) and drop ~callbacks.{name}"
            )


def located(target: str) -> type | None:
    """The class `target` names, or None (config_keys names a bad path in one line). Not
    Hydra's `get_class`, which logs three ERROR lines of its own before it raises."""
    found = locate(target)[0]
    return found if isinstance(found, type) else None
