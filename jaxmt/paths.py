"""The one way jaxmt reads a path from a config field, flag or argument: `~` and `$VAR` expanded.

Every reader of a path field calls `expand_path`, so `--config.data.csv_dir=$DATA/cs224n` or
`~/tensorflow_datasets` means the same in every config, whichever command reads it. A path may be any
`etils.epath` path (gs://bucket/... on a pod): the helpers below read and write files, figures and globs
through epath, which on a local path is Python's own `open` and `glob`, so local behaviour is unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from jaxmt.errors import ConfigError

_UNSET_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")

# Every config field that names a file or folder (`*` = any name), by the config files that have it.
# A test checks that each is expanded where it is read, and that no config has a path field missing here.
PATH_FIELDS = {
    "configs/default.py": ("data.csv_dir", "data.tfds_data_dir", "data.sick_file", "model.name",
                           "tasks.*.files.*", "tasks.*.train_files"),
    "configs/squad.py": ("data.train_file", "data.dev_file", "model.name"),
    "configs/pretrain_bert.py": ("data.files", "data.tfds_data_dir", "data.cache_dir", "model.init_from",
                                 "model.tokenizer"),
}


def expand_path(path: str, field: str = "") -> str:
    """`path` with `~` and environment variables (`$VAR`, `${VAR}`) expanded; '' stays ''.

    An unset variable is a `ConfigError` naming `field` (or the path): a literal `$DATA` folder
    is almost always a variable that was forgotten, not a folder name.
    """
    if not path:
        return path
    expanded = os.path.expandvars(os.path.expanduser(str(path)))
    unset = _UNSET_VARIABLE.search(expanded)
    if unset:
        name = unset.group(1).strip("{}")
        raise ConfigError(f"{field or 'path'} = {path!r}: environment variable {name} is not set")
    return expanded


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is a local path (not an `etils.epath` URI such as gs://bucket/...)."""
    return "://" not in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """`path` made absolute if it is local (as `os.path.abspath`); a URI (gs://...) as it is."""
    return os.path.abspath(path) if is_local(path) else os.fspath(path)


def open_text(path: str | os.PathLike) -> io.TextIOWrapper:
    """`path` (any epath path) opened for reading UTF-8 text line by line, a byte-order mark skipped (as
    `open(path, encoding='utf-8-sig')`; epath's own text mode is plain utf-8). Missing: FileNotFoundError."""
    from etils import epath

    return io.TextIOWrapper(epath.Path(path).open("rb"), encoding="utf-8-sig")


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> str:
    """Writes a matplotlib figure to `path` (any epath path; the format from its suffix, as `savefig`) and
    returns `path`: matplotlib writes only local files, so it renders into memory and epath writes the bytes."""
    from etils import epath

    image = io.BytesIO()
    savefig_kwargs.setdefault("format", os.path.splitext(os.fspath(path))[1][1:] or "png")
    fig.savefig(image, **savefig_kwargs)
    epath.Path(path).write_bytes(image.getvalue())
    return os.fspath(path)


def glob_paths(pattern: str) -> list[str]:
    """The paths matching `pattern` (`*`, `?`, `[...]` in any folder, as `glob.glob`) on any epath filesystem,
    spelled as the pattern is (a relative pattern gives relative paths); unsorted, as `glob.glob`."""
    from etils import epath

    parts = pattern.split("/")
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    if first == len(parts):
        return [pattern] if epath.Path(pattern).exists() else []
    root = "/".join(parts[:first])
    if not root.strip("/") or root.endswith(":/"):  # a wildcard in the first folder (or the bucket): local glob
        return glob.glob(pattern) if is_local(pattern) else []
    return [os.fspath(p) for p in epath.Path(root).glob("/".join(parts[first:]))]


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies one (small) file between any two epath paths, e.g. a run's records from gs:// to docs/runs."""
    from etils import epath

    epath.Path(target).write_bytes(epath.Path(source).read_bytes())


@contextlib.contextmanager
def local_staging(destination: str | os.PathLike) -> Iterator[str]:
    """A local folder to write `destination` into, for writers that only know local files (Hugging Face's
    `save_pretrained`, matplotlib): `destination` itself when it is local, else a temporary folder whose
    files are copied to `destination` through etils.epath when the block ends without an error."""
    if is_local(destination):
        os.makedirs(destination, exist_ok=True)
        yield os.fspath(destination)
        return
    staging = tempfile.mkdtemp(prefix="jaxmt-")
    try:
        yield staging
        copy_tree(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def copy_tree(local: str, destination: str | os.PathLike) -> None:
    """Copies every file under the local folder `local` to the same place under `destination` (any epath)."""
    from etils import epath

    target = epath.Path(destination)
    for folder, _, files in os.walk(local):
        for name in files:
            source = os.path.join(folder, name)
            copy = target / os.path.relpath(source, local)
            copy.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as f:
                copy.write_bytes(f.read())


def local_copy(folder: str) -> str:
    """A local copy of the folder `folder` (an epath URI, e.g. gs://bucket/models/bert), for readers that take
    only local folders (Hugging Face's from_pretrained): fetched once into the user's cache
    ($XDG_CACHE_HOME/jaxmt/remote, else ~/.cache/jaxmt/remote), then reused. A folder changed in place is not
    fetched again; give it a new name (or delete the cached copy)."""
    import hashlib

    from etils import epath

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    local = os.path.join(base, "jaxmt", "remote", hashlib.sha1(folder.encode()).hexdigest()[:16])
    done = os.path.join(local, ".complete")
    if os.path.exists(done):
        return local
    source = epath.Path(folder)
    if not source.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    pending = [source]
    while pending:
        for item in pending.pop().iterdir():
            if item.is_dir():
                pending.append(item)
                continue
            target = os.path.join(local, os.path.relpath(os.fspath(item), os.fspath(source)))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(item.read_bytes())
    open(done, "w").close()
    return local
