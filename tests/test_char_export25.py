"""A char model's export works from plain transformers: its model card's code runs, and the usual
idiom `tokenizer(text + tokenizer.eos_token)` encodes the end-of-text token.

Red team after25 (MEDIUM 1): on a corpus without `H`, the card's `tokenizer("Hello", ...)` died
with tokenizers' `WordLevel error: Missing [UNK] token from the vocabulary`, and so did
`tokenizer(text + tokenizer.eos_token)`: the export read `<|endoftext|>` as its characters
(`split_special_tokens`), which the char vocabulary lacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtrain.models.checkpoint import load_model
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import export_tiny, train_tiny

SHORT_RUN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
TEXT = "the fox sat"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A 2-step char GPT-2 on the word-list corpus (no `H`, no `<` or `|`), and its export."""
    root = tmp_path_factory.mktemp("char-export25")
    corpus = one_file_corpus(root / "corpus")
    assert not set("H<|") & set(corpus.read_text())
    ckpt = train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char", *SHORT_RUN)
    return {"ckpt": ckpt, "export": export_tiny(ckpt, root / "hf", data_dir)}


def test_the_model_cards_code_runs_on_its_folder(exported: dict[str, Path]) -> None:
    """The card's "Use" block, pasted into a process without lmtrain, loads and generates."""
    card = (exported["export"] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S)
    assert code is not None
    assert "Hello" not in code.group(1)  # the vocabulary cannot spell it
    script = 'import sys\nsys.modules["lmtrain"] = None\n' + code.group(1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()


def test_text_plus_eos_token_encodes_the_end_of_text_token(exported: dict[str, Path]) -> None:
    """The char vocabulary cannot spell `<|endoftext|>`: the export reads it as the token, and
    text around it encodes as training did."""
    trained = load_model(str(exported["ckpt"])).tokenizer
    tokenizer = AutoTokenizer.from_pretrained(exported["export"])
    model = AutoModelForCausalLM.from_pretrained(exported["export"])
    want = trained(TEXT, add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    assert eos == trained.eos_token_id
    assert tokenizer(TEXT).input_ids == want
    assert tokenizer(TEXT + tokenizer.eos_token).input_ids == [*want, eos]
    both = tokenizer(TEXT + tokenizer.eos_token + TEXT).input_ids
    assert both == [*want, eos, *want]
    assert tokenizer.decode(both) == TEXT + tokenizer.eos_token + TEXT
    assert max(both) < model.get_input_embeddings().weight.shape[0]


def test_a_vocabulary_without_letters_gets_an_example_it_can_spell() -> None:
    """Digits and punctuation only, no sample prompts: the last fallback took letters only, and
    an empty example fell back to "Hello" again (review of the fix)."""
    from types import SimpleNamespace

    from lmtrain.models.model_card import example_text
    from tests.helpers.corpora import build_tokenizer

    tokenizer = build_tokenizer("char", ["12 + 34 = 46;\n", "7 * 8 = 56.\n"])
    text = example_text(SimpleNamespace(tokenizer=tokenizer), {})
    assert text and text.strip() and not any(c.isalpha() for c in text)
    assert tokenizer(text, add_special_tokens=False).input_ids
