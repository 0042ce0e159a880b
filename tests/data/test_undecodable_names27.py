"""A corpus file whose name is not UTF-8 (`caf\\xe9.txt`, from a latin-1 system), and the advice
to convert a file that is not UTF-8 text (red team data27, M1 and L2).

The run's log refused any line naming such a file (a strict UTF-8 `FileHandler` on a name with
surrogate escapes): a 45-line "--- Logging error ---" traceback followed the one `error:` line,
and the line, or a warning in a run that went on, was missing from the run's log. The suggested
`iconv` named the file by Python's escape for it (`'caf\\udce9.txt'`), not a file the shell can
find. And the converted copy was written beside the original, which the advice never said to move
away, so the next run refused the same file again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_corpus

LATIN = "café crème, naïve façade\n" * 40


def command_between(line: str, opening: str, closing: str) -> str:
    """The part of `line` from `opening` up to (not including) `closing`."""
    start = line.index(opening)
    return line[start : line.index(closing, start)]


def test_a_non_utf8_name_is_one_line_in_the_log_and_its_advice_runs(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", n_docs=1)
    folder = os.fsencode(corpus)
    latin = folder + b"/caf\xe9.txt"
    with open(latin, "wb") as f:
        f.write(LATIN.encode("latin-1"))
    with open(folder + b"/r\xe9sum\xe9.json", "w") as f:  # read as text, with a warning naming it
        json.dump([{"text": "hello world " * 50}], f)
    run = tmp_path / "run"
    run.mkdir()  # made before: a refused run keeps it, with its log
    overrides = tiny_cli(tmp_path, tmp_path / "data", f"hydra.run.dir={run}", corpus=corpus)

    refused = run_cli("train", *overrides)
    output = refused.stdout + refused.stderr
    assert "Logging error" not in output, output[-3000:]
    line = assert_one_line_error(refused, "is not UTF-8 text", "iconv -f latin1 -t utf-8")
    logged = (run / "train.log").read_text(encoding="utf-8")
    assert "is not UTF-8 text" in logged and "iconv -f latin1" in logged, logged[-2000:]

    # The advice, as printed: convert with bash, then move the original out of the corpus.
    convert = command_between(line, "iconv ", "` with its real encoding")
    done = subprocess.run(["bash", "-c", convert], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, (convert, done.stderr)
    with open(folder + b"/caf\xe9.utf8.txt", "rb") as f:
        assert f.read().decode("utf-8") == LATIN
    move = command_between(line, "then move ", " out of the corpus")
    moved = subprocess.run(
        ["bash", "-c", f"mv {move.removeprefix('then move ')} {tmp_path}/"],
        capture_output=True,
        text=True,
    )
    assert moved.returncode == 0, (move, moved.stderr)
    assert os.path.exists(os.fsencode(tmp_path) + b"/caf\xe9.txt")

    # The next run reads the converted copy, and its warning naming r\xe9sum\xe9.json is logged.
    second = tmp_path / "second"
    again = run_cli("train", *overrides, f"hydra.run.dir={second}")
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "Logging error" not in output, output[-3000:]
    logged = (second / "train.log").read_text(encoding="utf-8")
    assert "holds a JSON array of records" in logged, logged[-2000:]
