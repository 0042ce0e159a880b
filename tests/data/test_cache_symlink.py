"""A token cache folder that is a symbolic link is never rebuilt, removed or written through:
complete, it is read; missing or damaged, the build refuses it in one line and the folder it
points to stays as it was. A cache that cannot be moved into place is one line too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmtrain.data import token_cache
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, fingerprint
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import one_file_corpus

CHAR = TokenizerSettings("char")


@pytest.fixture
def source(tmp_path: Path) -> TextFilesSource:
    return TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def user_folder(tmp_path: Path) -> Path:
    """Someone's folder with a meta.json that is no cache's (what probe C2 linked to)."""
    folder = tmp_path / "user" / "notes"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"mine": True}))
    (folder / "thesis.txt").write_text("years of work\n")
    return folder


def test_a_linked_damaged_cache_folder_is_refused_and_its_target_kept(
    tmp_path: Path, source: TextFilesSource
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    target = user_folder(tmp_path)
    before = snapshot(target)
    link = cache_dir / fingerprint(source, CHAR)
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(LMTrainError) as refused:
        build_or_load(cache_dir, source, CHAR, workers=1)
    message = str(refused.value)
    assert f"the token cache {link} is a symbolic link to {target}" in message
    assert "remove the link" in message and "\n" not in message
    assert link.is_symlink() and snapshot(target) == before
    assert not list(cache_dir.glob("*.tmp-*"))  # nothing built: refused before any work


def test_a_dangling_link_is_refused_before_any_build(
    tmp_path: Path, source: TextFilesSource
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    link = cache_dir / fingerprint(source, CHAR)
    link.symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(LMTrainError, match=r"is a symbolic link to .*gone"):
        build_or_load(cache_dir, source, CHAR, workers=1)
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_a_linked_complete_cache_is_read_as_it_is(tmp_path: Path, source: TextFilesSource) -> None:
    """A cache shared by a link (built elsewhere) keeps working: only a rebuild is refused."""
    built = build_or_load(tmp_path / "elsewhere", source, CHAR, workers=1)
    before = snapshot(built)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    link = cache_dir / built.name
    link.symlink_to(built, target_is_directory=True)
    assert build_or_load(cache_dir, source, CHAR, workers=1) == link
    assert snapshot(built) == before


def test_a_cache_that_cannot_be_moved_into_place_is_one_line(
    tmp_path: Path, source: TextFilesSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.replace failing (here: a folder appears in the way, as a non-empty one would on
    another host's file system) was a traceback."""
    cache_dir = tmp_path / "cache"
    folder = cache_dir / fingerprint(source, CHAR)
    real_write = token_cache.write

    def write_then_block(tmp: Path, *args: object) -> None:
        real_write(tmp, *args)
        folder.mkdir(parents=True)
        (folder / "someone_else.txt").write_text("not a cache\n")  # os.replace: ENOTEMPTY

    monkeypatch.setattr(token_cache, "write", write_then_block)
    with pytest.raises(LMTrainError) as refused:
        build_or_load(cache_dir, source, CHAR, workers=1)
    message = str(refused.value)
    assert f"could not be moved into place as {folder}" in message and "\n" not in message
    assert (folder / "someone_else.txt").read_text() == "not a cache\n"
    assert not list(cache_dir.glob("*.tmp-*"))  # the new build is cleaned up
