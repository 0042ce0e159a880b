"""Token files damaged in place are found by their checksums and rebuilt, with the file named."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, load_meta
from lmtrain.data.tokenizers import TokenizerSettings
from tests.helpers.corpora import one_file_corpus


def test_garbage_of_the_same_size_is_found_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))
    settings = TokenizerSettings("char")
    folder = build_or_load(tmp_path / "cache", source, settings, workers=1)
    good = (folder / "train.bin").read_bytes()
    assert set(load_meta(folder)["checksums"]) == {"train", "val"}
    (folder / "train.bin").write_bytes(os.urandom(len(good)))  # same size: passes a size check

    with caplog.at_level(logging.WARNING, logger="lmtrain.data.token_cache"):
        rebuilt = build_or_load(tmp_path / "cache", source, settings, workers=1)
    assert rebuilt == folder and (folder / "train.bin").read_bytes() == good
    assert "train.bin does not match its checksum" in caplog.text
