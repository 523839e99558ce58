"""The one way jaxmt reads a path from a config field, flag or argument: `~` and `$VAR` expanded.

Every reader of a path field calls `expand_path`, so `--config.data.csv_dir=$DATA/cs224n` or
`~/tensorflow_datasets` means the same in every config, whichever command reads it.
"""

from __future__ import annotations

import os
import re

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
