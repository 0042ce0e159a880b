"""Keep secrets out of what a run writes down: checkpoints, W&B configs, exports, model cards.

A run config is resolved before it is stored, so `+wandb_api_key=${oc.env:WANDB_API_KEY}` would
put the key itself into every checkpoint and into the W&B run. `redact` replaces two kinds of
values with `REDACTED` (the key stays, so a reader still sees that it was set):
- values of keys that name a secret (`api_key`, `token`, `hf_token`, `secret`, `password`, ...;
  not the tokenizer's `eos_token` and friends, which are vocabulary, not credentials);
- strings that contain the value of an environment variable whose name marks it as secret
  (`WANDB_API_KEY`, `HF_TOKEN`, `*_SECRET`, `*_PASSWORD`, ...), wherever they sit in the config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
# Config keys whose values are credentials.
SECRET_KEY = re.compile(
    r"api[_-]?key|secret|passw(or)?d|credential|private[_-]?key|access[_-]?key|"
    r"(^|[_-])(auth|token)$|^authorization$",
    re.IGNORECASE,
)
# Token strings of a tokenizer: names that end in "token" but hold vocabulary.
VOCABULARY_TOKENS = frozenset(
    f"{name}_token" for name in ("bos", "eos", "pad", "unk", "sep", "cls", "mask", "eot")
)
# Environment variables that hold credentials (TOKENIZERS_PARALLELISM is not one).
SECRET_ENV = re.compile(
    r"(^|_)(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY)(_|$)",
    re.IGNORECASE,
)
# Shorter values are too likely to occur by chance ("1", "true") to be hunted down in strings.
MIN_SECRET_CHARS = 8


def is_secret_key(key: object) -> bool:
    """Whether a config key names a credential."""
    name = str(key)
    return name.lower() not in VOCABULARY_TOKENS and SECRET_KEY.search(name) is not None


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of secret-looking environment variables, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        v
        for k, v in environ.items()
        if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_CHARS and not looks_like_path(v)
    }
    return sorted(values, key=len, reverse=True)


def looks_like_path(value: str) -> bool:
    """Where a credential is kept, not the credential (HF_TOKEN_PATH, CREDENTIALS_DIRECTORY,
    GOOGLE_APPLICATION_CREDENTIALS): hunting for it would redact every config path under it."""
    return value.startswith(("/", "~", "./", "../"))


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a plain config (dicts, lists, scalars) with secret values replaced."""
    secrets = environment_secrets() if secrets is None else secrets
    if isinstance(value, Mapping):
        return {
            k: REDACTED if is_secret_key(k) and v is not None else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return REDACTED
    return value
