"""What every jaxmt command line shares: flag parsing with one-line errors, the --config flag, log levels.

Each command defines its absl flags in a function called only when it runs (`run()`, the console
script, or `__main__`), so importing several commands' modules in one process (tests, notebooks)
never defines a flag twice.

Config files: `--config=PATH[:ARG]` loads PATH's `get_config(ARG)`. A `configs/NAME.py` that does not
exist relative to the working directory is taken from the configs shipped with jaxmt (the checkout's
configs/, installed as the package `jaxmt.configs`), so the documented commands and every default work
from any directory once jaxmt is installed. A config file in a package folder (one with __init__.py,
like configs/) is imported as part of that folder, so `from . import default` works wherever it lies;
a standalone file of your own can start from a shipped one with `from jaxmt.configs import default`
(installed) or `from configs import default` (run from a checkout).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import types
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
from ml_collections import ConfigDict
from ml_collections.config_flags import config_flags as ml_config_flags

SHIPPED_CONFIGS_PREFIX = "configs"


def shipped_configs_dir() -> str | None:
    """The folder of the configs shipped with jaxmt: the installed `jaxmt.configs`, or a checkout's configs/."""
    spec = importlib.util.find_spec("jaxmt.configs")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), SHIPPED_CONFIGS_PREFIX)
    return checkout if os.path.isfile(os.path.join(checkout, "__init__.py")) else None


def resolve_config_path(path: str) -> str:
    """`path` if that file exists, else the shipped config of that name for a `configs/NAME.py` path."""
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        return expanded
    folder, name = os.path.split(os.path.normpath(path))
    shipped = shipped_configs_dir()
    if folder == SHIPPED_CONFIGS_PREFIX and shipped and os.path.isfile(os.path.join(shipped, name)):
        return os.path.join(shipped, name)
    if os.path.isdir(expanded):
        raise ValueError(f"{path} is a folder; give a config file (.py with get_config())")
    names = sorted(f"configs/{n}" for n in os.listdir(shipped) if n.endswith(".py") and not n.startswith("_")) \
        if shipped else []
    raise ValueError(f"{path}: no such config file" + (f" (shipped: {', '.join(names)})" if names else ""))


def load_config_module(file: str) -> types.ModuleType:
    """Imports a config file; one in a package folder as a module of that folder (under a private name)."""
    folder, name = os.path.split(os.path.abspath(file))
    stem = name[:-3] if name.endswith(".py") else name
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        spec = importlib.util.spec_from_file_location(f"jaxmt_config_{stem}", file)
        if spec is None or spec.loader is None:
            raise ValueError(f"{file}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    package = "_jaxmt_configs_" + hashlib.sha1(folder.encode()).hexdigest()[:12]
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(package, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{stem}")


class ConfigFileParser(flags.ArgumentParser):
    """Like ml_collections' config-file parser, resolving shipped configs and failing with one-line reasons."""

    def __init__(self, lock_config: bool = True) -> None:
        self._lock_config = lock_config

    def flag_type(self) -> str:
        return "config object"

    def parse(self, path: str):
        file, *argument = path.split(":", 1)
        resolved = resolve_config_path(file)
        try:
            module = load_config_module(resolved)
        except (ImportError, SyntaxError, NameError, AttributeError) as err:
            raise ValueError(f"{resolved}: cannot load it ({type(err).__name__}: {err})") from None
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ValueError(f"{resolved}: has no get_config() function")
        try:
            config = get_config(*argument)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{resolved}: get_config({', '.join(map(repr, argument))}) failed: {err}") from None
        if self._lock_config and callable(getattr(config, "lock", None)):
            config.lock()
        return config


def define_config_flag(default: str, help_string: str = "Path to a config file with get_config().") -> None:
    """`--config` (and its `--config.x.y=v` overrides), resolved and loaded by `ConfigFileParser`."""
    try:  # without --config on the command line, ml_collections loads the default and its overrides right here
        flag = ml_config_flags._ConfigFlag(parser=ConfigFileParser(), serializer=flags.ArgumentSerializer(),
                                           name="config", default=default, help_string=help_string,
                                           flag_values=flags.FLAGS)
    except FLAG_ERRORS as err:
        exit_bad_flag(err)
    flags.DEFINE_flag(flag, flags.FLAGS)


FLAG_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError)


# ml_collections' error for a missing field names only the field's last part: "'learnin_rate'\nDid you mean ...".
_MISSING_FIELD = re.compile(r"""^'*([^'\s]+)'(?:\s+Did you mean "([^"]+)" instead of)?""")
HELP_FLAGS = ("--help", "--helpshort", "--helpfull", "--helpxml", "-?")


def misspelt_override(message: str, argv: list[str]) -> str | None:
    """The one-line error for a `--config.x.y=v` override whose field does not exist, naming the whole dotted
    field (and the suggestion, whole), or None if `message` is not about a missing field of an override."""
    match = _MISSING_FIELD.match(message)
    if match is None:
        return None
    missing, suggestion = match.groups()
    for arg in argv[1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        parts = name.split(".")
        if arg.startswith("--") and parts[0] == "config" and missing in parts[1:]:
            prefix = parts[:parts.index(missing, 1)]
            field = ".".join(prefix + [missing])
            hint = f"; did you mean {'.'.join(prefix + [suggestion])}?" if suggestion else ""
            return f"--{name}: the config has no field {field}{hint}"
    return None


def exit_bad_flag(err: Exception, argv: list[str] | None = None) -> NoReturn:
    """Prints a flag error on one line and exits 2."""
    message = str(err).replace("\\'", "'").replace("\\n", " ").replace("\n", " ").strip("\" ")
    message = misspelt_override(message, sys.argv if argv is None else argv) or message.strip("'")
    print(f"jaxmt: error: bad command-line flag: {message}", file=sys.stderr)
    raise SystemExit(2) from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a misspelt or ill-typed --config.x override as a one-line error. A help flag exits 0
    (absl exits 1 after printing the help, which README's exit statuses would call a failure)."""
    try:
        return flags.FLAGS(argv)
    except FLAG_ERRORS as err:
        exit_bad_flag(err, argv)
    except SystemExit as exit_:
        if exit_.code == 1 and any(arg.split("=", 1)[0] in HELP_FLAGS for arg in argv[1:]):
            raise SystemExit(0) from None
        raise


def check_output_dir(path: str, flag: str = "--workdir") -> None:
    """The folder a command writes must be creatable: not empty, and neither it nor a parent an existing file."""
    from jaxmt.errors import ConfigError
    from jaxmt.paths import is_local

    if not path:
        raise ConfigError(f"{flag} is empty: name the folder for the run's outputs")
    if not is_local(path):  # gs://bucket/...: the same check through etils.epath, up to the bucket
        from etils import epath

        existing = epath.Path(path)
        while len(existing.parts) > 3 and not existing.exists():
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise ConfigError(f"{flag}={path}: {existing} is a file, not a folder")
        return
    existing = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag}={path}: {existing} is a file, not a folder")


def check_run_inputs(config: ConfigDict, workdir: str) -> None:
    """What a training command checks before it loads anything: the workdir and every numeric config range."""
    from jaxmt.config_checks import check_ranges

    check_output_dir(workdir)
    check_ranges(config)


def setup_logging() -> None:
    """jaxmt's own progress at INFO; libraries (Orbax, absl) only when they warn."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("jaxmt").setLevel(logging.INFO)


def trainer_command(default_config: str, default_workdir: str, trainer: str, kind: tuple[str, str] | None = None,
                    hidden_results: tuple[str, ...] = ()) -> Callable[[], None]:
    """The `run()` of a training command: --config (default `default_config`) and --workdir; checks the config's
    ranges, then runs `trainer` ("module:function", imported only then, so bad input fails fast) and prints its
    results as JSON. `kind` = (a field the config must have, the message when it does not)."""

    def main(argv: list[str]) -> None:
        del argv
        setup_logging()
        from jaxmt.errors import ConfigError
        from jaxmt.training.faults import user_facing_errors

        config = flags.FLAGS.config
        with user_facing_errors():
            if kind is not None and kind[0] not in config:
                raise ConfigError(kind[1])
            check_run_inputs(config, flags.FLAGS.workdir)
            module, function = trainer.split(":")
            from jaxmt.compilation_cache import AUTO, persistent_compilation_cache

            with persistent_compilation_cache(config.get("compilation_cache", AUTO)):
                results = getattr(importlib.import_module(module), function)(config, flags.FLAGS.workdir)
        print(json.dumps({k: v for k, v in results.items() if k not in hidden_results}, indent=2, sort_keys=True))

    def run() -> None:
        define_config_flag(default_config)
        flags.DEFINE_string("workdir", default_workdir, "Directory for checkpoints, logs and results.")
        app.run(main, flags_parser=parse_flags)

    return run
