"""An lm-eval answer that gets no tokens of its own (red team edge29, finding 1).

HFLM scores a choice as the tokens of context + choice past the context's: an empty choice, or one
a SentencePiece-style tokenizer merges into the context's last token, leaves none, and lm-eval's
bare `assert len(continuation_enc) > 0` was a traceback after the whole val split was scored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from lmtrain.utils.lm_eval_failures import scoring_error
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, model_from_checkpoint, refused_eval, train_tiny
from tests.test_lm_eval import MC_LINES, write_task

SHORT = ("trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null")


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny char-level model's last.ckpt."""
    root = tmp_path_factory.mktemp("char")
    corpus = one_file_corpus(root / "corpus", seed=0)
    return train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char", *SHORT)


def test_an_empty_choice_is_one_line_naming_the_task_before_the_val_split(
    char_ckpt: Path, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trailing space or newline of the context moves to the answer: these end in a letter.
    good = {"context": "The cat", "choices": [" sat.", " ran."], "label": 0}
    empty = {"context": "The dog", "choices": [" ran.", ""], "label": 0}
    write_task(tmp_path / "tasks", "empty_choice", [good, empty], MC_LINES)
    line = refused_eval(
        char_ckpt,
        tmp_path / "eval",
        data_dir,
        capsys,
        "tasks=[empty_choice]",
        f"include_path={tmp_path / 'tasks'}",
    )
    # Named by the check before the val split: the task, the answer and its context.
    assert "in empty_choice, the answer '' adds no tokens after its context" in line, line
    assert "'The dog'" in line and "target_delimiter" in line, line
    # Under limit=1 only the first document is scored: nothing to refuse.
    eval_dir = tmp_path / "eval_limited"
    capsys.readouterr()
    metrics = eval_tiny(
        char_ckpt,
        eval_dir,
        data_dir,
        "tasks=[empty_choice]",
        f"include_path={tmp_path / 'tasks'}",
        "limit=1",
    )
    assert "lm_eval/empty_choice/acc" in metrics


def test_lm_evals_own_assertion_on_an_answer_without_tokens_is_one_line(char_ckpt: Path) -> None:
    # What slips past the zero-shot check (a few-shot prompt that cuts differently) still
    # reaches lm-eval's bare assert: its line, from lm-eval's real failure.
    model, tokenizer, _ = model_from_checkpoint(char_ckpt)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=16)
    request = Instance("loglikelihood", doc={}, arguments=("The cat", ""), idx=0)
    with pytest.raises(AssertionError) as caught:
        lm.loglikelihood([request])
    failure = scoring_error(caught.value, ["t"], None, lm.max_length)
    assert failure is not None
    assert "tasks=['t'] hold an answer that adds no tokens after its context" in str(failure)
