"""The commands a corpus file's read error suggests name the file by its path, folder and all,
and write only to names that nothing has yet (red team rev_docs17, L2).

`data.source.path=bad/a.txt.xz` got `decompress it (xz -dc a.txt.xz > a.txt)`: copied into the
shell the run was started from it failed, and run in the corpus folder its `> a.txt` truncated
the user's own a.txt without a word. The conversions (`iconv ... > a.txt.utf8`) likewise, and
`tar xf t.tar` extracted over the files already there. Here the commands are run as a user runs
them, through bash.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from lmtrain.data.corpus import read_text_pieces
from lmtrain.data.read_errors import check_not_archive
from lmtrain.errors import LMTrainError
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli

TEXT = "The quick brown fox jumps over the lazy dog.\n" * 40
USERS = "the user's own notes, not to be overwritten\n"


def command_in(message: str, opening: str) -> str:
    """The command the message suggests: from `opening` to the hint's closing `)` or backtick."""
    found = re.search(rf"[(`]({re.escape(opening)}.*?)[)`](?:,| and| with| so)", message)
    assert found, message
    return found.group(1)


def bash(command: str, cwd: Path) -> None:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, (command, done.stderr)


def test_the_cli_names_the_folder_and_an_output_that_overwrites_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    packed = bad / "a.txt.xz"
    packed.write_bytes(lzma.compress(TEXT.encode()))
    (bad / "a.txt").write_text(USERS)  # `> a.txt` truncated it
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=packed))
    line = assert_one_line_error(result)
    assert line == (
        f"error: '{packed}' is xz-compressed data, not text: decompress it (xz -dc {packed} > "
        f"{bad}/a.decompressed.txt), then move {packed} out of the corpus, or leave it out of "
        "data.source.path"
    )
    assert sorted(p.name for p in bad.iterdir()) == ["a.txt", "a.txt.xz"]  # nothing written
    assert_no_cache_left(tmp_path / "data" / "cache")

    # Followed from any folder, the advice decompresses the file and leaves a.txt as it was.
    bash(command_in(line, "xz -dc"), cwd=tmp_path / "data")
    assert (bad / "a.txt").read_text() == USERS
    assert (bad / "a.decompressed.txt").read_text() == TEXT


def test_a_relative_path_stays_as_given_and_odd_names_are_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt.xz").write_bytes(lzma.compress(TEXT.encode()))
    message = refusal(lambda: check_not_archive(Path("bad/a.txt.xz")))
    assert "decompress it (xz -dc bad/a.txt.xz > bad/a.txt), then move bad/a.txt.xz out" in message

    # A dangling link is not free either: `>` writes through it to wherever it points.
    (tmp_path / "bad" / "a.txt").symlink_to(tmp_path / "elsewhere.txt")
    message = refusal(lambda: check_not_archive(Path("bad/a.txt.xz")))
    assert "(xz -dc bad/a.txt.xz > bad/a.decompressed.txt)" in message, message

    # A name that starts with '-' is not an option; a space and a quote are quoted.
    (tmp_path / "-x.txt.bz2").write_bytes(bz2.compress(TEXT.encode()))
    message = refusal(lambda: check_not_archive(Path("-x.txt.bz2")))
    assert "(bunzip2 -c ./-x.txt.bz2 > ./-x.txt)" in message, message
    odd = tmp_path / "my notes"
    odd.mkdir()
    (odd / "it's.txt").write_bytes(gzip.compress(TEXT.encode()))
    (odd / "it's.txt.gz").write_text(USERS)  # `mv` would have replaced it
    message = refusal(lambda: check_not_archive(Path("my notes/it's.txt")))
    rename = command_in(message, "mv ")
    assert rename == "mv 'my notes/it'\"'\"'s.txt' 'my notes/it'\"'\"'s.renamed.txt.gz'", rename
    bash(rename, cwd=tmp_path)
    assert (odd / "it's.txt.gz").read_text() == USERS
    assert gzip.decompress((odd / "it's.renamed.txt.gz").read_bytes()).decode() == TEXT


def test_a_conversion_writes_a_new_file_read_the_same_way(tmp_path: Path) -> None:
    """`notes.utf8.txt` (still picked by '*.txt'), `data.utf8.jsonl.gz` (still read as records
    through gzip), and past the names already taken."""
    folder = tmp_path / "my corpus"
    folder.mkdir()
    latin = folder / "notes.txt"
    latin.write_bytes("naïve café\n".encode("latin-1"))
    (folder / "notes.utf8.txt").write_text(USERS)
    with pytest.raises(LMTrainError) as refused:
        list(read_text_pieces(latin))
    convert = command_in(str(refused.value), "iconv ")
    assert convert == f"iconv -f latin1 -t utf-8 '{latin}' > '{folder}/notes.utf8-2.txt'", convert
    bash(convert, cwd=tmp_path)
    assert (folder / "notes.utf8.txt").read_text() == USERS
    assert (folder / "notes.utf8-2.txt").read_text() == "naïve café\n"

    records = folder / "data.jsonl.gz"
    records.write_bytes(gzip.compress('{"text": "naïve"}\n'.encode("latin-1")))
    with pytest.raises(LMTrainError) as refused:
        list(read_text_pieces(records))
    assert f"gzip > '{folder}/data.utf8.jsonl.gz'`" in str(refused.value), refused.value


def test_a_tar_archive_extracts_into_a_new_folder(tmp_path: Path) -> None:
    """`tar xf` extracts over the files already there: into a new folder instead."""
    member = tmp_path / "member" / "x.txt"
    member.parent.mkdir()
    member.write_text(TEXT)
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(member, arcname="x.txt")
    (tmp_path / "x.txt").write_text(USERS)  # where `tar xf t.tar` run here extracted x.txt
    (tmp_path / "t").mkdir()  # the folder named after the archive is taken
    message = refusal(lambda: check_not_archive(archive))
    extract = command_in(message, "mkdir ")
    new = tmp_path / "t.extracted"
    assert extract == f"mkdir {new} && tar xf {archive} -C {new}", extract
    bash(extract, cwd=tmp_path)
    assert (tmp_path / "x.txt").read_text() == USERS
    assert (new / "x.txt").read_text() == TEXT


def test_a_decompressed_copy_of_a_file_named_gz_is_not_named_gz(tmp_path: Path) -> None:
    """xz data named `c.jsonl.gz`: a copy named `c.decompressed.jsonl.gz` would be read through
    gzip again (review of this change); the copy never takes the read file's own name."""
    from lmtrain.data.fix_commands import decompress

    named_gz, plain = tmp_path / "c.jsonl.gz", tmp_path / "packed.txt"
    assert decompress("xz -dc", named_gz) == f"xz -dc {named_gz} > {tmp_path / 'c.jsonl'}"
    assert decompress("xz -dc", plain) == f"xz -dc {plain} > {tmp_path / 'packed.decompressed.txt'}"
