"""The `{name}` fields of each callback's checkpoint `filename`, against the metrics logged.

Lightning fills a field with the metric of that name when it saves, and with 0 when there is no
such metric, without a word: `filename='best-{step}-{val_loss:.4f}'` named every best checkpoint
`best-2-0.0000.ckpt` (the metric is val/loss), so the files no longer told which was best.
Fields are read as Lightning reads them (ModelCheckpoint._format_checkpoint_name: from `{` to the
first `:` or `}`, slashes and dots included). Another spelling of a metric of ours is refused,
with the name meant, as `monitor` is (lmtrain.utils.metric_names.check_metric_names); any other
name may be logged by a module of one's own, and is only warned of.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from lmtrain.utils.checks import Problems
from lmtrain.utils.metric_names import VAL_METRICS, letters

log = logging.getLogger(__name__)

# Lightning's own parse of a field's name.
FIELD = re.compile(r"\{(.*?)[:}]")
# Lightning adds these to the metrics at every save.
LIGHTNING_FIELDS = ("epoch", "step")
# What lmtrain's module logs to the trainer's metrics, which a save formats from.
LOGGED = (*VAL_METRICS, "train/loss", "train/grad_norm", "train/clipped", "tokens_seen")
KNOWN = (*LIGHTNING_FIELDS, *LOGGED)


def check_filename_fields(callbacks: Mapping[str, Any], problems: Problems) -> None:
    """Each `{field}` of `callbacks.<name>.filename` (the resolved callbacks group) that spells
    a known metric another way: refused; one that names no known metric: warned of."""
    for name, node in callbacks.items():
        filename = node.get("filename") if isinstance(node, Mapping) else None
        if not isinstance(filename, str):
            continue
        key = f"callbacks.{name}.filename"
        for field in dict.fromkeys(FIELD.findall(filename)):  # each once, in order
            if field in KNOWN:
                continue
            same = [known for known in KNOWN if letters(known) == letters(field)]
            if same:
                problems.add(
                    f"{key}={filename!r} has the field {{{field}}}, which no metric fills "
                    f"(Lightning would write 0): did you mean {{{same[0]}}}?"
                )
                continue
            log.warning(
                "%s=%r has the field {%s}, which is not a metric lmtrain logs: unless a module "
                "of yours logs it, Lightning writes 0 there (lmtrain's: %s)",
                key,
                filename,
                field,
                ", ".join(KNOWN),
            )
