"""What a corpus folder holds beside its text: a version-control folder (`.git`: its binary index
was refused with "remove it", exit 1) and `.json` files of one array of records (trained on as raw
JSON, brackets and field names included, without a word)."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load
from lmtrain.data.tokenizers import TokenizerSettings
from tests.helpers.assertions import refusal
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import load_splits, write_corpus

CHAR = TokenizerSettings.from_config({"kind": "char"})
# What git's index starts with: a signature, then the version as 4 bytes (NUL bytes: binary).
GIT_INDEX = b"DIRC\x00\x00\x00\x02\x00\x00\x00\x01"


def git_repository(folder: Path) -> Path:
    """`folder` made a git repository with its files committed, by git itself."""
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q"], ["add", "."], [*identity, "commit", "-qm", "corpus"]):
        subprocess.run(["git", *command], cwd=folder, check=True, capture_output=True)
    return folder


def corpus_texts(folder: Path) -> list[Path]:
    return sorted(folder.glob("doc*.txt"))


# -- version control's own folders ---------------------------------------------------------------


def test_a_git_repository_folder_trains_on_its_text(tmp_path: Path) -> None:
    """`data.source.path=<a git checkout>`: exit 0, one info line names .git (was: exit 1, "'.git/
    index' holds a NUL byte ... else remove it")."""
    corpus = git_repository(write_corpus(tmp_path / "repo"))
    out = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-3000:]
    assert (
        f"Left 1 version-control folder under data.source.path={corpus} out of the corpus "
        f"(version control's own files, never corpus text): {corpus / '.git'}"
    ) in output, output[-3000:]
    assert "NUL byte" not in output, output[-3000:]


def test_version_control_folders_are_left_out_of_a_walk_and_of_a_glob(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """.git, .hg and .svn folders, a submodule's `.git` file and a link to a .git folder: none is
    corpus text; one info line names them; a `**` glob of the same tree reads the same files."""
    corpus = write_corpus(tmp_path / "corpus", n_docs=3)
    (corpus / ".git").mkdir()
    (corpus / ".git" / "index").write_bytes(GIT_INDEX)
    (corpus / ".git" / "description").write_text("Unnamed repository\n")
    (corpus / ".hg" / "store").mkdir(parents=True)
    (corpus / ".hg" / "store" / "00manifest.i").write_bytes(b"\x00\x01hg")
    (corpus / ".svn").mkdir()
    (corpus / ".svn" / "wc.db").write_bytes(b"SQLite format 3\x00")
    (corpus / "sub").mkdir()
    (corpus / "sub" / "notes.txt").write_text("a note in a submodule\n")
    (corpus / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    (corpus / "history").symlink_to(corpus / ".git", target_is_directory=True)
    texts = [*corpus_texts(corpus), corpus / "sub" / "notes.txt"]
    with caplog.at_level(logging.INFO, logger="lmtrain.data.file_walk"):
        files = TextFilesSource(str(corpus)).file_list()[0]
    assert sorted(files) == sorted(texts)
    lines = [r.getMessage() for r in caplog.records if r.name == "lmtrain.data.file_walk"]
    assert lines == [
        f"Left 5 version-control folders under data.source.path={corpus} out of the corpus "
        "(version control's own files, never corpus text): "
        f"{corpus / '.git'}, {corpus / '.hg'}, {corpus / '.svn'} and 2 more"
    ], lines
    train, val = load_splits(TextFilesSource(str(corpus)))  # reads: no NUL refusal
    assert len(train) + len(val) == len(texts)
    (corpus / "history").unlink()  # a glob follows it: `**` leaves out only names with a dot
    globbed = TextFilesSource(f"{corpus}/**/*").file_list()[0]
    assert sorted(globbed) == sorted(texts)


def test_a_path_inside_a_version_control_folder_is_read_as_typed(tmp_path: Path) -> None:
    """Named on purpose, a file in .git is read; a .git folder named is walked, and its binary
    index is refused without advice to remove it (git's own file: keep it)."""
    repo = write_corpus(tmp_path / "repo", n_docs=2)
    (repo / ".git").mkdir()
    (repo / ".git" / "description").write_text("Unnamed repository; edit this file.\n")
    (repo / ".git" / "index").write_bytes(GIT_INDEX)
    named = TextFilesSource(str(repo / ".git" / "description"))
    assert named.file_list()[0] == [repo / ".git" / "description"]
    message = refusal(lambda: load_splits(TextFilesSource(str(repo / ".git"))))
    assert message.startswith(
        f"'{repo / '.git' / 'index'}' holds a NUL byte at byte 4: it is a file of version "
        "control's own .git folder, not corpus text: keep it, and point data.source.path at the "
        "corpus's files instead"
    ), message
    assert "remove" not in message, message


def test_a_binary_file_elsewhere_keeps_its_advice(tmp_path: Path) -> None:
    """Outside version control the NUL refusal is as before (a `.gitignore`'d name is no reason)."""
    corpus = write_corpus(tmp_path / "corpus", n_docs=2)
    (corpus / "ids.bin").write_bytes(GIT_INDEX)
    message = refusal(lambda: load_splits(TextFilesSource(str(corpus))))
    assert message.startswith(f"'{corpus / 'ids.bin'}' holds a NUL byte at byte 4"), message
    assert "else remove it or narrow data.source.path" in message, message


# -- .json files of one array of records ---------------------------------------------------------


def records(n: int, first_key: str = "id") -> list[dict]:
    if first_key == "id":
        return [{"id": i, "text": f"record {i}\nof text"} for i in range(n)]
    return [{"text": f"record {i}\nof text", "id": i} for i in range(n)]


def json_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lmtrain.data.json_records"]


def test_a_json_array_of_records_is_read_as_text_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus", n_docs=2)
    pretty = json.dumps(records(5), indent=2) + "\n"  # "text" not the first key
    (corpus / "a_records.json").write_text(pretty)
    minified = json.dumps(records(4, first_key="text")).encode()
    (corpus / "b_more.json.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + minified))  # a BOM
    # Real JSON files, which a code corpus holds: fixtures of other objects, a list of words,
    # an object with a text field, a longer first record than is looked at.
    (corpus / "fixtures.json").write_text(json.dumps([{"model": "app.user", "pk": 1}] * 3))
    (corpus / "words.json").write_text(json.dumps(["the", "quick", "fox"]))
    (corpus / "package.json").write_text(json.dumps({"name": "x", "text": "y"}, indent=2))
    source = TextFilesSource(str(corpus))
    with caplog.at_level(logging.WARNING):
        build_or_load(tmp_path / "cache", source, CHAR, workers=1)
        build_or_load(tmp_path / "cache", source, CHAR, workers=1)  # reused: no second warning
    warnings = json_warnings(caplog)
    path = corpus / "a_records.json"
    assert warnings == [
        f"'{path}' holds a JSON array of records (as do 1 more .json file), but data=text_files "
        "reads it as plain text, brackets, field names and escapes included: read its records "
        f"as rows with data=hf_dataset data.source.path={path}, or write them as JSON lines "
        f"(`jq -c '.[]' {path} > {corpus / 'a_records.jsonl'}`) and pass that file instead"
    ], warnings
    train, val = load_splits(source)  # what is read does not change
    assert pretty in train + val


def test_the_json_lines_command_of_the_warning_writes_a_new_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gzipped array: the command decompresses first, and `>` never names a file there."""
    corpus = write_corpus(tmp_path / "corpus", n_docs=2)
    path = corpus / "rows.json.gz"
    path.write_bytes(gzip.compress(json.dumps(records(3)).encode()))
    (corpus / "rows.jsonl").write_text(json.dumps({"text": "mine"}) + "\n")
    with caplog.at_level(logging.WARNING):
        build_or_load(tmp_path / "cache", TextFilesSource(str(corpus)), CHAR, workers=1)
    (warning,) = json_warnings(caplog)
    assert f"(`gzip -dc {path} | jq -c '.[]' > {corpus / 'rows.records.jsonl'}`)" in warning


def test_a_first_record_too_long_to_look_at_gives_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a file's start is read: a first record past it is not parsed (and not warned of)."""
    corpus = write_corpus(tmp_path / "corpus", n_docs=2)
    long = [{"id": 0, "blob": "x" * (1 << 20), "text": "late"}, {"text": "b"}]
    (corpus / "long.json").write_text(json.dumps(long))
    with caplog.at_level(logging.WARNING):
        build_or_load(tmp_path / "cache", TextFilesSource(str(corpus)), CHAR, workers=1)
    assert json_warnings(caplog) == []
