"""Claims in the prose that a file can settle: the pinned versions the README names, and figures quoted from the
run records in docs/runs/ (the tables are rebuilt from those records by jaxmt.summarize; these are the numbers a
sentence quotes). A claim that drifts from its source fails here, naming the file."""

import configparser
import importlib.metadata
import re

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def constraints() -> dict[str, str]:
    """constraints.txt as canonical name -> pinned version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def setup_requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    for extra in ("cpu", "test", "tpu", "cuda", "bench"):
        lines += parser["options.extras_require"][extra].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]


def test_constraints_pin_every_requirement_inside_its_range():
    pins = constraints()
    for requirement in setup_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name} (setup.cfg requires it)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside setup.cfg's {requirement}")


def test_accelerator_pins_go_with_the_pinned_jax():
    """jax[tpu] needs the libtpu its release names, jax[cuda12] the plugin and PJRT of its own version."""
    pins = constraints()
    jax = pins["jax"]
    assert pins["jaxlib"] == pins["jax-cuda12-plugin"] == pins["jax-cuda12-pjrt"] == jax
    tpu_extra = [r for r in setup_requirements() if r.name == "jax" and "tpu" in r.extras]
    assert [str(r.specifier) for r in tpu_extra] == [f"=={jax}"], "setup.cfg's tpu extra must pin the tested jax"
    if importlib.metadata.version("jax") == jax:  # the installed jax's metadata names its libtpu
        (libtpu,) = [Requirement(r) for r in importlib.metadata.requires("jax")
                     if r.startswith("libtpu") and 'extra == "tpu"' in r]
        assert libtpu.specifier.contains(pins["libtpu"]), f"jax {jax} wants {libtpu}, constraints pin {pins['libtpu']}"


def test_readme_names_the_pinned_versions_and_installs_with_them():
    readme, pins = (ROOT / "README.md").read_text(), constraints()
    section = readme[readme.index("`constraints.txt` pins"):]
    section = " ".join(section[: section.index("\n\n")].split())
    for name, version in re.findall(r"([a-z][a-z0-9-]+?)(?: and [a-z0-9-]+)? (\d+\.\d+\.\d+(?:\.\d+)?)", section):
        pinned = pins.get(canonicalize_name(name))
        assert pinned == version, f"README says {name} {version}, constraints.txt {pinned}"
    quick_start = re.findall(r"^python3 -m venv .*$", readme, re.MULTILINE)
    ci = (ROOT / ".ci/run").read_text()
    for command in quick_start + re.findall(r"^python3 -m venv .*$", ci, re.MULTILINE):
        assert command.count("pip install") == command.count("pip install -q -c constraints.txt") + command.count(
            "pip install -c constraints.txt"), f"an install without the tested versions: {command}"
