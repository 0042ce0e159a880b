"""Keep secrets out of what a run writes down: checkpoints, W&B configs, exports, model cards.

A run config is resolved before it is stored, so `+wandb_api_key=${oc.env:WANDB_API_KEY}` would
put the key itself into every checkpoint and into the W&B run. `redact` replaces a value with
`<redacted>` (the key stays, so a reader still sees that it was set) when
- its key names a secret (`api_key`, `token`, `hf_token`, `secret`, `password`, ...; not the
  tokenizer's `eos_token` and friends, which are vocabulary, not credentials);
- it is a string that holds the value of an environment variable whose NAME marks it secret
  (`WANDB_API_KEY`, `HF_TOKEN`, `*_SECRET`, `*_PASSWORD`, ...), however short that value is.
  A value of MIN_SECRET_CHARS or more is found anywhere inside a string ("see-hf_abcdefgh");
  a shorter one only as the whole string: `GITHUB_TOKEN=abc` redacts the value "abc" but not
  "abcdef" or "/data/abc", since three letters occur everywhere by chance. Flag words (`1`,
  `true`, `no`, ... as in HF_HUB_DISABLE_IMPLICIT_TOKEN=1) and paths (HF_TOKEN_PATH) are
  settings, not secrets, and are left alone;
- it is a string that writes out a credential as `key: value` or `key=value` with a secret key
  ("password: hunter2", "https://host/?api_key=abc", "Authorization: Bearer x"), or a URL with
  a password before its host ("https://user:pw@host", as MLflow and git URLs carry one). The
  whole string is replaced, not just the value: where a value ends inside free text cannot be
  told for sure, and half a secret is still a leak.
A string is thus either kept whole or replaced whole. Numbers and booleans are never secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
# Config keys whose values are credentials.
SECRET_KEY = re.compile(
    r"api[_-]?key|secret|passw(or)?d|passphrase|credential|private[_-]?key|access[_-]?key|"
    r"auth[_-]?header|(^|[_-])(auth|token)$|^authorization$",
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
# Shorter values are too likely to occur by chance ("abc" in "/data/abc") to be hunted down
# inside strings: they are redacted only where they are the whole string.
MIN_SECRET_CHARS = 8
# Values of secret-named variables that switch something on or off: they hide nothing.
FLAG_WORDS = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off"})
# `key: value` / `key=value` in free text, the key a whole word (also "key": "value",
# --key=value and a URL's ?key=value); the value neither empty nor already redacted.
KEY_VALUE_TEXT = re.compile(
    r"(?<!\w)(?P<key>[A-Za-z][\w-]*)[\"']?\s*[:=]\s*[\"']?(?=[^\s\"',&;])(?!"
    + re.escape(REDACTED)
    + ")"
)

# A URL's user:password@ (RFC 3986 userinfo with a non-empty password); "git@host" has none.
URL_PASSWORD = re.compile(r"[A-Za-z][\w+.-]*://[^/\s:@]*:[^/\s@]+@")


def is_secret_key(key: object) -> bool:
    """Whether a config key names a credential."""
    name = str(key)
    return name.lower() not in VOCABULARY_TOKENS and SECRET_KEY.search(name) is not None


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secrets to find anywhere inside strings: values of MIN_SECRET_CHARS or more of
    secret-named environment variables, longest first."""
    values = {v for v in _secret_env_values(environ) if len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def short_environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secrets to find only as whole strings: the shorter values of secret-named variables."""
    return sorted({v for v in _secret_env_values(environ) if len(v) < MIN_SECRET_CHARS})


def _secret_env_values(environ: Mapping[str, str] | None) -> Iterable[str]:
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        setting = not value or value.lower() in FLAG_WORDS or looks_like_path(value)
        if SECRET_ENV.search(name) and not setting:
            yield value


def looks_like_path(value: str) -> bool:
    """Where a credential is kept, not the credential (HF_TOKEN_PATH, CREDENTIALS_DIRECTORY,
    GOOGLE_APPLICATION_CREDENTIALS): hunting for it would redact every config path under it."""
    return value.startswith(("/", "~", "./", "../"))


def holds_secret(text: str, secrets: list[str] | None = None) -> bool:
    """Whether `text` holds one of `secrets` (by default the environment's; short ones only as
    the whole text) or writes out a credential as `key: value` / `key=value`."""
    if secrets is None:
        secrets = environment_secrets() + short_environment_secrets()
    found = any(s == text if len(s) < MIN_SECRET_CHARS else s in text for s in secrets if s)
    if found or URL_PASSWORD.search(text):
        return True
    return any(is_secret_key(m["key"]) for m in KEY_VALUE_TEXT.finditer(text))


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a plain config (dicts, lists, scalars) with secret values replaced.

    `secrets`: the values to look for; by default those of the environment (both kinds)."""
    if secrets is None:  # read once, not at every node
        secrets = environment_secrets() + short_environment_secrets()
    if isinstance(value, Mapping):
        return {
            k: REDACTED if is_secret_key(k) and v is not None else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str) and holds_secret(value, secrets):
        return REDACTED
    return value


def redact_override(override: str, secrets: list[str] | None = None) -> str:
    """A command-line override (`+extra.password=x`) with its value redacted by the same rules
    as a config's (its last key part naming a secret, or its value holding one)."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    name = key.lstrip("+~").rsplit(".", 1)[-1]
    return f"{key}={redact({name: value}, secrets)[name]}"


def scrub(value: Any) -> Any:
    """A copy of the run config without Hydra's own node, with the keys that name a secret
    dropped (`lmtrain.utils.redact.is_secret_key`: one rule for every file a run writes) and
    strings holding a secret redacted (see `lmtrain.utils.redact`).

    Checkpoints of older runs may still hold secrets in their run config: this is the last gate.
    """
    return redact(_drop_secret_keys(value))


def _drop_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _drop_secret_keys(v)
            for k, v in value.items()
            if k != "hydra" and not is_secret_key(k)
        }
    if isinstance(value, list):
        return [_drop_secret_keys(v) for v in value]
    return value
