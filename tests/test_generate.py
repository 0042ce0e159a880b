"""`lmtrain.generate`: text on stdout only, seeded sampling, and clear errors for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from lmtrain.generate import generate
from lmtrain.models.generation import generate_text
from tests.helpers.assertions import one_error_line
from tests.helpers.cli import run_cli
from tests.helpers.compose import compose
from tests.helpers.corpora import write_corpus
from tests.helpers.pretrained import tiny_bpe
from tests.helpers.runs import export_tiny, model_from_checkpoint, train_tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("generate")
    corpus = write_corpus(root / "corpus")
    return train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char")


def run_generate(ckpt: Path, tmp_path: Path, data_dir: Path, capsys, *overrides: str) -> str:
    """stdout of the generate entry point, run in-process."""
    cfg = compose("generate", tmp_path / "run", data_dir, f"ckpt_path={ckpt}", *overrides)
    capsys.readouterr()
    generate(cfg)
    return capsys.readouterr().out


def test_cli_prints_prompt_and_completion_only(ckpt: Path, tmp_path: Path) -> None:
    model, tokenizer, _ = model_from_checkpoint(ckpt)
    (expected,) = generate_text(
        model, tokenizer, "The dog", max_new_tokens=30, greedy=True, stop_at_eos=True
    )
    result = run_cli(
        "generate",
        f"ckpt_path={ckpt}",
        "prompt='The dog'",
        "greedy=true",
        "max_new_tokens=30",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == expected + "\n"
    assert len(expected) > len("The dog")
    assert "Generating from" in result.stderr  # logs go to stderr


def test_a_special_tokens_spelling_in_a_prompt_is_text_as_in_training() -> None:
    """`<|endoftext|>` typed in a prompt became the end-of-text id, a document boundary,
    while the token cache holds its characters (red team rev_tok, 2026-12-05)."""
    tokenizer = tiny_bpe(["hello world, a few words of text"] * 20, 300)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    seen: list[list[int]] = []
    model.transformer.wte.register_forward_pre_hook(
        lambda _, args: seen.append(args[0][0].tolist())
    )
    prompt = "hello <|endoftext|> world"
    (text,) = generate_text(model, tokenizer, prompt, max_new_tokens=2, greedy=True)
    assert text.startswith(prompt)
    plain = tokenizer(prompt, add_special_tokens=False, split_special_tokens=True).input_ids
    assert seen[0] == plain and tokenizer.eos_token_id not in plain


def test_sampling_is_seeded_and_gives_num_samples(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    args = ("prompt=The", "max_new_tokens=40", "num_samples=3", "separator='|||'")
    first = run_generate(ckpt, tmp_path, data_dir, capsys, *args, "seed=1")
    again = run_generate(ckpt, tmp_path, data_dir, capsys, *args, "seed=1")
    other = run_generate(ckpt, tmp_path, data_dir, capsys, *args, "seed=2")
    assert first == again != other
    samples = first.rstrip("\n").split("|||")
    assert len(samples) == 3 and all(s.startswith("The") for s in samples)
    assert len(set(samples)) > 1


def test_prompt_file_and_context_cap(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, caplog
) -> None:
    """The file's exact text is the prompt; new tokens stop at the model's 64-token context,
    and a warning says so (fewer tokens were printed without a word)."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The cat sat.\nA bird")
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        out = run_generate(
            ckpt, tmp_path, data_dir, capsys, f"prompt_file={prompt}", "max_new_tokens=500"
        )
    assert out.startswith("The cat sat.\nA bird")
    assert len("The cat sat.\nA bird") < len(out) - 1 <= 64  # char-level: a token per character
    capped = "max_new_tokens=500 capped at 45: the model's context is 64 tokens, 19 of them"
    assert capped in caplog.text


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["prompt_file=/no/such/prompt.txt"], ["prompt_file='/no/such/prompt.txt'", "does not"]),
        (["temperature=0"], ["temperature=0", "greedy=true"]),
        (["num_samples=0"], ["num_samples=0", "at least 1"]),
        # The char tokenizer's corpus starts sentences with other letters and has no '!'.
        (["prompt='Zebra!'"], ["prompt='Zebra!'", "'Z', '!'", "cannot encode"]),
        # 64 tokens fill the 64-token context: nothing is left to generate.
        ([f"prompt={'a' * 64}"], ["64 tokens", "context is 64", "shorter than 64 tokens"]),
    ],
)
def test_bad_input_is_one_line(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, overrides: list[str], fragments: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_generate(ckpt, tmp_path, data_dir, capsys, *overrides)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_error_line(captured.err)
    assert all(f in line for f in fragments), line


def test_missing_model_path(tmp_path: Path, data_dir: Path, capsys) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    for path, fragment in ((tmp_path / "nope.ckpt", "does not exist"), (empty, "config.json")):
        with pytest.raises(SystemExit):
            run_generate(path, tmp_path, data_dir, capsys)
        assert fragment in capsys.readouterr().err


def test_a_folders_extra_decoding_settings_are_named(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, caplog
) -> None:
    """Red team: a folder's repetition_penalty changed greedy text with nothing said. They are
    applied, as plain `model.generate` does, and named in a warning; an export's own are not."""
    exported = export_tiny(ckpt, tmp_path / "export", data_dir)
    args = ("prompt='The '", "greedy=true", "max_new_tokens=30")
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        run_generate(ckpt, tmp_path, data_dir, capsys, *args)  # a .ckpt has no such file
        plain = run_generate(exported, tmp_path, data_dir, capsys, *args)
    assert "generation_config.json also sets" not in caplog.text
    config = json.loads((exported / "generation_config.json").read_text())
    config.update(repetition_penalty=50.0, no_repeat_ngram_size=1)
    (exported / "generation_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        changed = run_generate(exported, tmp_path, data_dir, capsys, *args)
    assert changed != plain  # the settings are applied ...
    assert (  # ... and named
        f"{exported}'s generation_config.json also sets no_repeat_ngram_size=1, "
        "repetition_penalty=50.0, which transformers applies to every token (greedy=true too)"
    ) in caplog.text
