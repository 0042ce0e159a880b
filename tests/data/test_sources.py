"""Corpus sources: deterministic splits, gz/jsonl/globs, pieces cut safely, one-line errors."""

from __future__ import annotations

import gzip
import hashlib
from itertools import pairwise
from pathlib import Path

import pytest

from lmtrain.data import shakespeare
from lmtrain.data.corpus import file_hash, is_val_index, read_text_pieces
from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.data.sources import PythonStdlibSource, TextFilesSource, is_val_file
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import DOCS, load_splits, write_jsonl, write_mixed_files


def write_files(folder: Path, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def names_on_side(val: bool, count: int, fraction: float, prefix: str = "") -> list[str]:
    """File names that the hash puts on the requested side, to build splits on purpose."""
    names = (f"{prefix}doc{i}.txt" for i in range(10_000))
    return [n for n in names if is_val_file(n, fraction) == val][:count]


def test_stdlib_split_is_deterministic_disjoint_and_has_no_tests() -> None:
    source = PythonStdlibSource(val_fraction=0.05)
    files = source.file_list()[0]
    relative = [f.relative_to(source.root) for f in files]
    assert files == sorted(files) and len(files) > 100
    assert not any({"test", "tests", "idle_test", "site-packages"} & set(r.parts) for r in relative)
    train, val = load_splits(source)
    assert train and val and len(train) + len(val) == len(files)
    val_files = [r for r in relative if is_val_file(r.as_posix(), 0.05)]
    assert len(val) == len(val_files)
    assert load_splits(source) == (train, val)


def test_single_file_splits_by_characters(tmp_path: Path) -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    write_files(tmp_path, {"a.txt": text})
    train, val = load_splits(TextFilesSource(str(tmp_path / "a.txt"), val_fraction=0.1))
    cut = int(len(text) * 0.9)
    assert train == [text[:cut]] and val == [text[cut:]]


def test_folder_and_glob_split_by_file(tmp_path: Path) -> None:
    val_names = names_on_side(True, 2, 0.1)
    top_train = names_on_side(False, 3, 0.1)
    nested_train = names_on_side(False, 2, 0.1, prefix="sub/")
    write_files(tmp_path, {n: f"text of {n}\n" for n in val_names + top_train + nested_train})
    (tmp_path / "empty.txt").write_text("")
    expected_val = sorted(f"text of {n}\n" for n in val_names)
    for path, n_train in ((tmp_path, 5), (tmp_path / "*.txt", 3), (tmp_path / "**" / "*.txt", 5)):
        train, val = load_splits(TextFilesSource(str(path), val_fraction=0.1))
        assert sorted(val) == expected_val and len(train) == n_train


def test_several_files_never_leave_val_or_train_empty(tmp_path: Path) -> None:
    write_files(tmp_path, {n: n for n in names_on_side(False, 3, 0.1)})
    train, val = load_splits(TextFilesSource(str(tmp_path), val_fraction=0.1))
    assert len(train) == 2 and val == [min(names_on_side(False, 3, 0.1), key=file_hash)]
    other = tmp_path / "all_val"
    write_files(other, {n: n for n in names_on_side(True, 2, 0.1)})
    train, val = load_splits(TextFilesSource(str(other), val_fraction=0.1))
    assert len(train) == 1 and len(val) == 1


@pytest.mark.parametrize("name", ["missing.txt", "nothing/*.md", "empty_dir"])
def test_no_matching_file_is_a_one_line_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    path = str(tmp_path / name)
    with pytest.raises(LMTrainError, match="matches no file: pass an existing file") as err:
        load_splits(TextFilesSource(path))
    assert path in str(err.value) and "\n" not in str(err.value)


def test_empty_files_and_bad_settings_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(LMTrainError, match="only empty files"):
        load_splits(TextFilesSource(str(tmp_path)))
    (tmp_path / "b.bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LMTrainError, match="not UTF-8"):
        load_splits(TextFilesSource(str(tmp_path / "b.bin")))
    with pytest.raises(LMTrainError, match=r"val_fraction=1\.5"):
        TextFilesSource(str(tmp_path), val_fraction=1.5)


def test_shakespeare_from_a_local_path_holds_out_the_last_tenth(play: Path) -> None:
    text = play.read_text(encoding="utf-8")
    train, val = load_splits(ShakespeareSource(path=str(play)))
    assert train[0] + val[0] == text
    assert val == [text[int(len(text) * 0.9) :]]


def test_shakespeare_download_failure_says_to_set_a_path(tmp_path: Path) -> None:
    source = ShakespeareSource(
        download_dir=str(tmp_path), url="http://127.0.0.1:9/input.txt", timeout_s=2
    )
    with pytest.raises(LMTrainError, match=r"failed .*set data\.source\.path=") as err:
        load_splits(source)
    assert "\n" not in str(err.value)


def test_shakespeare_download_rejects_a_wrong_checksum(tmp_path: Path) -> None:
    (tmp_path / "fake.txt").write_text("not shakespeare")
    source = ShakespeareSource(
        download_dir=str(tmp_path / "dl"), url=(tmp_path / "fake.txt").as_uri()
    )
    with pytest.raises(LMTrainError, match="wrong sha256"):
        load_splits(source)
    assert not list((tmp_path / "dl").iterdir())


def test_shakespeare_download_is_verified_and_kept(
    tmp_path: Path, play: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served from a file:// URL, the play stands in for Tiny Shakespeare: the one thing
    changed is the checksum the download must match (the real file is not on every machine)."""
    monkeypatch.setattr(shakespeare, "TINY_SHAKESPEARE_SHA256", sha256_of(play))
    dl = tmp_path / "dl"
    train, val = load_splits(ShakespeareSource(download_dir=str(dl), url=play.as_uri()))
    kept = dl / "input.txt"
    assert kept.read_bytes() == play.read_bytes()
    assert [p.name for p in dl.iterdir()] == ["input.txt"]
    assert train[0] + val[0] == play.read_text(encoding="utf-8")
    # Kept and verified, it is read again without a download (the URL now leads nowhere).
    gone = ShakespeareSource(download_dir=str(dl), url=(tmp_path / "gone.txt").as_uri())
    assert load_splits(gone) == (train, val)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_globs_over_gz_md_and_txt_files(tmp_path: Path) -> None:
    folder = write_mixed_files(tmp_path / "c", DOCS)
    docs = {p.relative_to(folder).as_posix(): DOCS[int(p.name[3:6])] for p in folder.rglob("*.*")}
    source = TextFilesSource([str(folder / "**" / "*.gz"), str(folder / "part1" / "*.md")])
    files, base = source.file_list()
    assert base == folder and all(f.name.endswith((".gz", ".md")) for f in files)
    part1_md = {n for n in docs if n.startswith("part1/") and n.endswith(".md")}
    wanted = {n for n in docs if n.endswith(".gz")} | part1_md
    assert {f.relative_to(folder).as_posix() for f in files} == wanted
    train, val = load_splits(source)
    assert sorted(train + val) == sorted(docs[f.relative_to(folder).as_posix()] for f in files)
    assert len(val) == source.file_splits().count("val")


def test_jsonl_files_hold_one_document_per_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "one.jsonl", DOCS)
    train, val = load_splits(TextFilesSource(str(tmp_path / "one.jsonl"), val_fraction=0.25))
    assert val == [d for i, d in enumerate(DOCS) if is_val_index(i, 0.25)] and train
    assert train == [d for i, d in enumerate(DOCS) if not is_val_index(i, 0.25)]
    many = tmp_path / "many"
    many.mkdir()
    for i in range(4):
        (many / f"p{i}.jsonl.gz").write_bytes(gzip.compress((tmp_path / "one.jsonl").read_bytes()))
    train, val = load_splits(TextFilesSource(str(many)))
    assert len(train) + len(val) == 4 * len(DOCS) and len(val) % len(DOCS) == 0


def test_record_suffixes_in_upper_case_are_read_as_records(tmp_path: Path) -> None:
    # RECS.JSONL (and .NDJSON.GZ) trained on the raw JSON lines, braces and field names.
    one = write_jsonl(tmp_path / "one.jsonl", DOCS)
    (tmp_path / "RECS.JSONL").write_bytes(one.read_bytes())
    (tmp_path / "RECS.NDJSON.GZ").write_bytes(gzip.compress(one.read_bytes()))
    expected = sorted(DOCS)
    for name in ("RECS.JSONL", "RECS.NDJSON.GZ"):
        train, val = load_splits(TextFilesSource(str(tmp_path / name), val_fraction=0.25))
        assert sorted(train + val) == expected, name


def test_broken_jsonl_lines_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n\n{"text": "cut\n')
    broken = r"a\.jsonl:3 is not valid JSON \(Invalid control character at column 14\)"
    with pytest.raises(LMTrainError, match=broken):
        load_splits(TextFilesSource(str(tmp_path / "a.jsonl")))
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"body": "x"}\n')
    with pytest.raises(LMTrainError, match=r"a\.jsonl:2 has no string field 'text'.*text_field"):
        load_splits(TextFilesSource(str(tmp_path / "a.jsonl")))


def test_a_big_file_is_read_in_pieces_cut_between_two_lines(tmp_path: Path) -> None:
    lines = (f"def f{i}():\n    return {i}\n\n  \n" if i % 3 else f"x{i}\ny\n" for i in range(500))
    text = "".join(lines)
    (tmp_path / "big.txt").write_text(text)
    pieces = list(read_text_pieces(tmp_path / "big.txt", block_chars=100))
    assert "".join(pieces) == text and len(pieces) > 20
    for before, after in pairwise(pieces):
        assert before.endswith("\n") and not before[-2].isspace() and not after[0].isspace()
    assert max(map(len, pieces)) < 4 * 100 + 100


def test_one_file_split_by_characters_streams_like_the_whole_text(tmp_path: Path) -> None:
    text = "".join(f"ligne {i}: café\nnext\n" for i in range(300))
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    cut = int(len(text) * 0.9)
    source = TextFilesSource(str(tmp_path / "a.txt"), val_fraction=0.1, block_chars=64)
    pieces = list(source.documents())
    assert len(pieces) > 10 and [p.end for p in pieces].count(True) == 2
    assert load_splits(source) == ([text[:cut]], [text[cut:]])
