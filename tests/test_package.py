"""The installable package: the wheel holds every module of jaxmt/, the shipped configs (as jaxmt.configs)
and one console script per command; and a `--config=configs/NAME.py` works from outside a checkout."""

import importlib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

import jaxmt

COMMANDS = ("train", "evaluate", "pretrain", "qa", "acgan", "sweep", "probe", "plot", "predict", "export",
            "summarize", "compile_report")
BUILD_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built offline from a copy of the sources (so no build/ or egg-info lands in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, source / name)
    for folder in ("jaxmt", "configs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, ("building needs setuptools and wheel in this environment "
                                   f"(pip install -e '.[test]'):\n{build.stderr[-3000:]}")
    (path,) = out.glob("jaxmt-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield path, set(archive.namelist()), archive


def test_wheel_holds_every_module_and_the_shipped_configs(wheel):
    path, names, _ = wheel
    assert path.name.startswith(f"jaxmt-{jaxmt.__version__}-")
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "jaxmt").rglob("*.py") if "__pycache__" not in p.parts}
    configs = {f"jaxmt/configs/{p.name}" for p in (ROOT / "configs").glob("*.py")}
    assert len(modules) > 50 and "jaxmt/configs/__init__.py" in configs
    assert not (modules | configs) - names
    assert not {n for n in names if n.endswith(".py")} - modules - configs  # nothing stray (tests, benchmarks)


def test_wheel_declares_a_console_script_per_command(wheel):
    _, names, archive = wheel
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    lines = archive.read(entry_points).decode().split("[console_scripts]")[1].split("[")[0].split("\n")
    scripts = dict(line.replace(" ", "").split("=") for line in lines if line.strip())
    assert scripts == {f"jaxmt-{command.replace('_', '-')}": f"jaxmt.{command}:run" for command in COMMANDS}
    for command in COMMANDS:
        assert callable(importlib.import_module(f"jaxmt.{command}").run)


def outside_checkout(tmp_path, *command):
    """`python -m jaxmt.<command>` run from an empty folder, with this checkout's jaxmt importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_shipped_config_paths_resolve_outside_a_checkout(tmp_path, monkeypatch):
    from jaxmt.cli import resolve_config_path

    monkeypatch.chdir(tmp_path)
    assert os.path.samefile(resolve_config_path("configs/sum.py"), ROOT / "configs" / "sum.py")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sum.py").write_text("def get_config():\n    return None\n")
    assert resolve_config_path("configs/sum.py") == "configs/sum.py"  # a file of the user's own comes first
    with pytest.raises(ValueError, match=r"configs/nope.py: no such config file \(shipped: configs/acgan.py"):
        resolve_config_path("configs/nope.py")


def test_default_config_and_ranges_work_from_another_directory(tmp_path):
    out = outside_checkout(tmp_path, "jaxmt.pretrain", "--config.optim.learning_rate=0", "--workdir=w")
    assert out.returncode == 2 and out.stderr.strip() == "jaxmt: error: config.optim.learning_rate = 0.0; expected > 0"
