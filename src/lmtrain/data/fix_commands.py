"""The shell commands that a corpus file's read error suggests (decompress, extract, convert,
rename): runnable as they stand, and safe to run.

Each names the file by its path as given (quoted for the shell only where it needs it), so that
it works copied into the shell the run was started from, and writes only to a name that nothing
has yet. A hint that named the file alone (`xz -dc a.txt.xz > a.txt`) failed there, and its
`> a.txt` truncated whatever a.txt was in that folder: in the corpus folder, the user's own data.
`tar xf` extracts over existing files and `mv` replaces its target, so they get new names too.
"""

from __future__ import annotations

import os
import shlex
from itertools import count
from pathlib import Path

# Compressors whose suffix a decompressed copy drops (`notes.txt.xz` -> `notes.txt`).
COMPRESSION_SUFFIXES = ("xz", "bz2", "zst")
# Archive suffixes an extraction folder drops (`corpus.tar.gz` -> `corpus`), longest first.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".gz", ".zip")


def word(path: Path) -> str:
    r"""`path` as one shell word: as given where no character needs quoting, and after `./` when
    it starts with `-`, which a command would take for an option.

    A name that is not UTF-8 (`caf\xe9.txt` from a latin-1 system) reaches Python as a str with
    surrogate escapes, which quoted as such would name another file: it is written in bash's
    `$'...'` quotes instead, its bytes as `\xNN`, so that the shell passes the name's own bytes.
    """
    text = str(path)
    text = f"./{text}" if text.startswith("-") else text
    raw = os.fsencode(text)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "$'" + "".join(byte_escape(b) for b in raw) + "'"
    return shlex.quote(text)


def byte_escape(byte: int) -> str:
    r"""One byte of a name inside bash's `$'...'`: printable ASCII as itself (but `\` and `'`,
    escaped), any other as `\xNN`."""
    char = chr(byte)
    if char in "\\'":
        return "\\" + char
    return char if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


def move_out(path: Path) -> str:
    """The advice after a command that writes a fixed copy of `path` beside it: the next run
    would read the original as well (in the same folder, or under the same glob) and refuse it
    again, so it goes."""
    return f"then move {word(path)} out of the corpus"


def read_as(name: str) -> tuple[str, str]:
    """`name` cut before the suffixes a corpus reader goes by: `.gz` and the one before it
    (`.jsonl.gz` reads as records), else the last (`.txt`, which a glob such as '*.txt' picks)."""
    suffixes = Path(name).suffixes
    keep = suffixes[-2:] if suffixes and suffixes[-1].lower() == ".gz" else suffixes[-1:]
    tail = "".join(keep)
    return name[: len(name) - len(tail)], tail


def unused(path: Path, marker: str, keep_suffixes: bool = True, itself: bool = True) -> Path:
    """`path` if nothing is there (not even a dangling link, which `>` would write through) and
    `itself` allows it (not for the file being read), else the first free name with `.marker`,
    `.marker-2`, ... inserted before the suffixes it is read by (appended: `keep_suffixes=False`,
    for a folder)."""
    if itself and not os.path.lexists(path):
        return path
    head, tail = read_as(path.name) if keep_suffixes else (path.name, "")
    for n in count(1):
        candidate = path.with_name(f"{head}.{marker if n == 1 else f'{marker}-{n}'}{tail}")
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")  # count() never ends


def decompress(tool: str, path: Path) -> str:
    """`<tool> <path> > <new file>`, the file's name without its compression suffix where it has
    one: `tool` writes to stdout (`xz -dc`: `xz -d` refuses a name without its suffix) and keeps
    the compressed file, which the hint asks to move out of the corpus."""
    stem, dot, suffix = path.name.rpartition(".")
    if dot and stem and suffix.lower() in COMPRESSION_SUFFIXES:
        out = unused(path.with_name(stem), "decompressed")
    else:  # a name that says gzip (`c.jsonl.gz`) would have its text read through gzip
        gz = stem and suffix.lower() == "gz"
        plain = path.with_name(stem) if gz else path
        out = unused(plain, "decompressed", itself=plain != path)  # never the file read
    return f"{tool} {word(path)} > {word(out)}"


def extract(path: Path, zip_archive: bool = False) -> str:
    """A command that extracts the archive `path` into a new folder beside it, named after it."""
    name = path.name
    lower = name.lower()
    cut = next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s) and len(name) > len(s)), "")
    stem = path.with_name(name[: len(name) - len(cut)])
    folder = word(unused(stem, "extracted", keep_suffixes=False, itself=bool(cut)))
    if zip_archive:
        return f"unzip {word(path)} -d {folder}"  # -d makes the folder
    return f"mkdir {folder} && tar xf {word(path)} -C {folder}"


def rename_gz(path: Path) -> str:
    """`mv` to the file's name with `.gz` added, or a free name that ends in .gz."""
    return f"mv {word(path)} {word(unused(path.with_name(path.name + '.gz'), 'renamed'))}"


def conversion(path: Path, encoding: str = "latin1") -> str:
    """A command that converts the file `path` from `encoding` to UTF-8, into a new file beside
    it; through gzip for a `.gz` file (iconv on its compressed bytes would write garbage)."""
    out = word(unused(path, "utf8", itself=False))
    if path.name.lower().endswith(".gz"):
        return f"zcat {word(path)} | iconv -f {encoding} -t utf-8 | gzip > {out}"
    return f"iconv -f {encoding} -t utf-8 {word(path)} > {out}"
