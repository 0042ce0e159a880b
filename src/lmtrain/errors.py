"""Every error a user (or a rank) sees, and the helpers that turn other errors into one line.

Entry points catch `LMTrainError`, print its message as a single `error: ...` line and exit
non-zero, so a researcher sees what to change instead of a traceback. Anything else is a bug and
keeps its trace.
"""

from __future__ import annotations

from typing import TypeVar

from lightning.pytorch.utilities.exceptions import SIGTERMException

E = TypeVar("E", bound=BaseException)


class LMTrainError(Exception):
    """A problem with the user's input: the message names the bad value and what to do instead."""


# The decoders to name instead of a model type that has no causal LM (lmtrain.models.causal),
# for a model_type setting and for a saved model.
DECODER_TYPE = "use a decoder type (gpt2, llama, mistral, qwen2, ...)"
DECODER_MODEL = "pass a decoder model (gpt2, llama, mistral, qwen2, ...)"


def no_causal_lm(subject: str, advice: str = DECODER_TYPE) -> LMTrainError:
    """The refusal of `subject`, a model type transformers has no causal LM of: here, not in
    lmtrain.models.causal, for the config checks before any work (lmtrain.utils.model_checks)."""
    return LMTrainError(
        f"{subject} has no causal LM in transformers (an encoder or encoder-decoder model): "
        f"{advice}"
    )


def epoch_end_ranking(key: str) -> LMTrainError:
    """The refusal of `<key>.save_on_train_epoch_end=true` (`key`: the checkpoint callback's
    config key): by the config checks before any work, and by the callback built in Python."""
    return LMTrainError(
        f"{key}.save_on_train_epoch_end=true ranks the best checkpoint at the epoch's end, after "
        "last.ckpt is written for the validation before it, so a run stopped in between loses "
        "it: drop the key (the best checkpoint is chosen right after each validation)"
    )


class UserErrorExit(SystemExit):
    """Exit code 1 once a user error was printed as its one `error:` line; `message` keeps that
    line for a sweep's ledger (`lmtrain.utils.sweep_ledger`), which names why each job failed."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message


class MissingCorpusError(LMTrainError):
    """`data.source.path` matches no file; `path` is the value, for a caller that knows where
    it came from (eval: the run config a model was trained with) to say what to type."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class RankAgreedError(LMTrainError):
    """A stop that every rank decided together (through a collective) and raises at the same
    step, such as a non-finite loss: rank 0 alone prints it, and the ranks leave together."""


class NonFiniteLossError(RankAgreedError):
    """The loss was NaN or infinite on some rank and `nan_guard=stop`: every rank raises it."""


class Preempted(SIGTERMException):
    """Training stopped on a preemption signal, with a checkpoint saved, on every rank at once.

    A SIGTERMException (so a sweep job re-raises it instead of scoring it) whose exit code is
    128 + the signal's number, what a shell reports for a process the signal ended: 143 for
    SIGTERM, 138 for SIGUSR1, 140 for SIGUSR2.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message


def first_line(err: BaseException) -> str:
    """The first line of an error's message (library errors run to many lines), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def find_cause(err: BaseException | None, kind: type[E]) -> E | None:
    """The first error of type `kind` in `err`'s chain of causes (`raise ... from`) and contexts.

    Libraries wrap errors: Hydra's instantiate wraps ours in its own, datasets wraps a
    UnicodeDecodeError in a DatasetGenerationError.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def user_message(err: BaseException) -> str:
    """The message `err` was raised with, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's error (`ExceptionWrapper.reraise`) as a new error of its type
    whose message is "Caught <Class> in DataLoader worker process <n>." and the worker's whole
    formatted traceback, which ends in `<module>.<Class>: <message>`: printed as is, the user's
    one line would be that "Caught ..." line and a traceback. Other errors: `str(err)`.
    """
    text = str(err)
    kind = type(err)
    if not text.startswith(f"Caught {kind.__name__} ") or "\nOriginal Traceback" not in text:
        return text
    name = kind.__qualname__
    if kind.__module__ not in ("__main__", "builtins"):  # as `traceback` names the type
        name = f"{kind.__module__}.{name}"
    _, found, message = text.rpartition(f"\n{name}: ")
    return message.rstrip("\n") if found else first_line(err)
