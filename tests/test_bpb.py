"""`val/bpb` at every validation: bits per byte from a per-token byte-length table, equal to
`lmtrain.eval`'s figure (which decodes the val split), synced as a ratio of sums over ranks,
and shown by `lmtrain.report`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmtrain.data.byte_lengths import token_byte_lengths
from lmtrain.data.tokenizers import bpe_tokenizer, char_tokenizer
from lmtrain.data.windows import PAD_TOKEN
from lmtrain.models import CausalLMModule
from lmtrain.report import write_report
from lmtrain.train import train
from tests.helpers.corpora import WORDS
from tests.helpers.metric_probes import bpb_on_rank, on_two_gloo_ranks
from tests.helpers.runs import eval_tiny, tiny_train_config

# Words of 2, 3 and 4 UTF-8 bytes a character among ASCII ones.
NON_ASCII = ["café", "naïve", "日本語", "🙂", "über", "ça"]
TEXT = "The café is naïve 日本語 🙂 über\nça the cat"


def write_jsonl_corpus(path: Path, n_docs: int = 300, seed: int = 0) -> Path:
    """One .jsonl of short documents (split by document), each starting with an ASCII word."""
    rng = random.Random(seed)
    words = WORDS + NON_ASCII
    docs = [
        " ".join(rng.choice(words) for _ in range(rng.randint(5, 9))).capitalize() + "."
        for _ in range(n_docs)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    return path


def byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE as Llama 2 ships it: `▁` for spaces, `<0xNN>` byte tokens for
    what the vocabulary lacks, decoded by Replace, ByteFallback, Fuse and Strip."""
    vocab = {"<unk>": 0, "</s>": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)}}
    for piece in ["▁", *"abcdefghijklmnopqrstuvwxyzT", "▁t", "he", "▁the", "▁c"]:
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "c")]
    model = models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tokenizer.add_special_tokens(["</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["char", "bpe", "byte_fallback"])
def test_table_counts_the_bytes_each_token_adds_to_the_text(kind: str) -> None:
    """Summed over any run of tokens after the first, the table gives the UTF-8 bytes those
    tokens add to the decoded text; end-of-text counts 0 bytes."""
    texts = [TEXT] * 20
    tokenizer = {
        "char": lambda: char_tokenizer(texts),
        # Learned from ASCII only: the other characters stay split into their bytes.
        "bpe": lambda: bpe_tokenizer([" ".join(WORDS)] * 20, 300),
        "byte_fallback": byte_fallback_tokenizer,
    }[kind]()
    table = token_byte_lengths(tokenizer)
    assert table.shape == (len(tokenizer),) and table.dtype == torch.int64
    assert table[tokenizer.eos_token_id] == 0
    ids = tokenizer(TEXT + tokenizer.eos_token + TEXT).input_ids
    assert tokenizer.eos_token_id in ids

    def decoded_bytes(part: list[int]) -> int:
        return len(tokenizer.decode(part, skip_special_tokens=True).encode("utf-8"))

    # From every token boundary that is also a character boundary (a prefix cut inside a
    # character's UTF-8 sequence decodes to U+FFFD).
    starts = [s for s in range(1, len(ids)) if "\ufffd" not in tokenizer.decode(ids[:s])]
    assert len(starts) > len(ids) / 2
    for start in starts:
        added = decoded_bytes(ids) - decoded_bytes(ids[:start])
        assert int(table[ids[start:]].sum()) == added, (start, tokenizer.convert_ids_to_tokens(ids))
    # A token alone may decode to more or fewer bytes than it adds within text: the table does
    # not decode tokens one at a time (partial UTF-8 of a BPE token, a byte token, a leading ▁).
    alone = [decoded_bytes([i]) for i in ids]
    if kind != "char":
        assert alone != table[ids].tolist()


def test_bpb_is_a_ratio_of_sums_and_padding_windows_count_for_nothing() -> None:
    """What FSDP's padded val batches hold: a window of PAD_TOKEN adds no nats and no bytes."""
    tokenizer = char_tokenizer([TEXT])
    module = CausalLMModule("gpt2", {"n_layer": 1, "n_head": 2, "n_embd": 16}, tokenizer=tokenizer)
    module.eval()
    ids = torch.tensor(tokenizer(TEXT).input_ids)
    windows = torch.stack([ids[0:14], ids[13:27]])  # back to back, as val windows are
    pad = torch.full((1, 14), PAD_TOKEN)
    with torch.no_grad():
        module.validation_step(torch.cat([windows[:1], pad]), 0)
        module.validation_step(windows[1:], 1)
        module.validation_step(pad, 2)  # padding only
        logits = module(windows[:, :-1])
    targets = windows[:, 1:]
    nats = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), reduction="sum"
    )
    n_bytes = sum(len(tokenizer.decode([t]).encode("utf-8")) for t in targets.flatten().tolist())
    assert n_bytes > targets.numel()  # multi-byte characters among them
    expected = float(nats) / math.log(2) / n_bytes
    assert float(module.val_bpb.compute()) == pytest.approx(expected, rel=1e-6)
    assert float(module.val_loss.compute()) == pytest.approx(
        float(nats) / targets.numel(), rel=1e-6
    )


def test_bpb_over_ranks_sums_numerators_and_denominators() -> None:
    """(3 + 6) nats over (6 + 8) bytes, not the mean of the ranks' ratios."""
    values = on_two_gloo_ranks(bpb_on_rank)
    expected = (3 + 6) / math.log(2) / (6 + 8)
    assert values[0] == pytest.approx(expected) and values[1] == pytest.approx(expected)
    mean_of_ratios = (3 / 6 + 6 / 8) / 2 / math.log(2)
    assert abs(expected - mean_of_ratios) > 0.01


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A char and a BPE run on the same corpus (with 2- to 4-byte characters), as the two jobs
    of a sweep folder: what Hydra writes for a job (.hydra/) is written here."""
    root = tmp_path_factory.mktemp("bpb")
    corpus = write_jsonl_corpus(root / "corpus.jsonl")
    sweep = root / "sweep"
    ckpts = {}
    for num, kind in enumerate(["char", "bpe"]):
        overrides = [f"data.tokenizer.kind={kind}", "callbacks.text_samples=null"]
        cfg = tiny_train_config(sweep / str(num), data_dir, corpus, *overrides)
        train(cfg)
        hydra_dir = sweep / str(num) / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        ckpts[kind] = sweep / str(num) / "checkpoints" / "last.ckpt"
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")  # as a sweep has it
    return {**ckpts, "sweep": sweep}


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_training_val_bpb_equals_lmtrain_eval_on_the_same_checkpoint(
    kind: str, runs: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """The run's final validation (whole val split, final weights, last.ckpt) logged val/bpb
    from the table; lmtrain.eval decodes the val split into text and counts its bytes."""
    run_metrics = json.loads((runs[kind].parent.parent / "metrics.json").read_text())
    evaluated = eval_tiny(runs[kind], tmp_path, data_dir)
    assert evaluated["val/bytes"] > evaluated["val/tokens"]  # multi-byte characters too
    assert run_metrics["val/bpb"] == pytest.approx(evaluated["val/bpb"], rel=1e-4)
    assert 0 < run_metrics["val/bpb"] < 8


def test_report_shows_val_bpb_of_runs_with_different_tokenizers(runs: dict[str, Path]) -> None:
    paths = write_report(runs["sweep"])
    lines = paths["md"].read_text().splitlines()
    header = next(line for line in lines if line.startswith("| rank"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert "val/bpb" in columns
    for num in (0, 1):
        row = next(line for line in lines if line.startswith(f"| {num + 1} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        job = int(cells[columns.index("job")])
        bpb = json.loads((runs["sweep"] / str(job) / "metrics.json").read_text())["val/bpb"]
        assert cells[columns.index("val/bpb")] == f"{bpb:.4g}"
