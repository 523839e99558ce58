"""Claims in the prose that a file can settle: the pinned versions the README names, and figures quoted from the
run records in docs/runs/ (the tables are rebuilt from those records by jaxmt.summarize; these are the numbers a
sentence quotes). A claim that drifts from its source fails here, naming the file."""

import ast
import configparser
import importlib.metadata
import json
import math
import re
import sys

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


def test_every_package_jaxmt_imports_is_a_pinned_requirement():
    """A module jaxmt imports that only arrives through another package's dependencies could vanish with them."""
    modules = set()
    for path in (ROOT / "jaxmt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    required = {canonicalize_name(r.name) for r in setup_requirements()}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"jaxmt"}):
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        assert names & required, f"jaxmt imports {module} ({', '.join(sorted(names))}), not in setup.cfg"
        assert names & set(constraints()), f"constraints.txt does not pin {module}"


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


def records(pattern: str) -> dict[str, dict]:
    """Each results.json under docs/runs matching `pattern`, by its path."""
    found = {str(p.relative_to(ROOT)): json.loads(p.read_text()) for p in sorted(ROOT.glob(pattern))}
    assert found, f"no records match {pattern}"
    return found


def prose(path: str) -> str:
    """The file's text with line breaks and runs of spaces as single spaces, so a claim may wrap."""
    return " ".join((ROOT / path).read_text().split())


def claimed(path: str, pattern: str) -> tuple:
    match = re.search(pattern, prose(path))
    assert match, f"{path} no longer says {pattern!r}: update this test with the sentence"
    return match.groups()


def test_paper_a_minutes_a_run_span_the_records():
    """README and launch/paper_a.sh quote the span of the runs' training time (uninterrupted runs only)."""
    seconds = [r["train_seconds"] for r in records("docs/runs/paper_a/*/seed*/results.json").values()
               if r["resumed_from_step"] == 0]
    span = (str(math.floor(min(seconds) / 60)), str(math.ceil(max(seconds) / 60)))
    assert claimed("README.md", r"(\d+)-(\d+) minutes of training a run") == span
    assert claimed("launch/paper_a.sh", r"(\d+)-(\d+)-minute runs") == span


def step_time_cells(document: str, header: str) -> dict[str, str]:
    """Arm name -> the last cell (s/step) of each row of the table whose header starts with `header`."""
    text = (ROOT / document).read_text()
    table = text[text.index(header):].split("\n\n")[0].splitlines()[2:]
    return {re.split(r"[:( ]", row.strip("| "))[0]: row.strip().strip("|").split("|")[-1].strip() for row in table}


def test_paper_a_tables_quote_the_records_step_times():
    """docs/results.md's s/step cells: each arm's seconds_per_step, lowest-highest over its seeds (one value
    when they round alike; a blank cell where the prose explains why)."""
    tables = {"| dev, step 1,400 (mean ± std over seeds)": "docs/runs/paper_a",
              "| arm (change to configs/paper_a_triplet.py)": "docs/runs/paper_a_screen"}
    for header, folder in tables.items():
        cells = step_time_cells("docs/results.md", header)
        assert len(cells) >= 8, cells
        for arm, cell in cells.items():
            times = [r["seconds_per_step"] for r in records(f"{folder}/{arm}/seed*/results.json").values()]
            low, high = f"{min(times):.2f}", f"{max(times):.2f}"
            assert cell in ("", low if low == high else f"{low}-{high}"), (
                f"docs/results.md, {arm} in {folder}: s/step {cell!r}, records {low}-{high}")


def test_acgan_cost_and_probe_ranges_span_the_sweep_records():
    runs = records("docs/runs/acgan_sweep/fraction_*/*/seed_*/results.json")
    slowest = max(runs, key=lambda path: runs[path]["seconds_per_step"])
    rest = [r for path, r in runs.items() if path != slowest]
    per_step, seconds = [r["seconds_per_step"] for r in rest], [r["train_seconds"] for r in rest]
    assert claimed("docs/acgan.md", r"(\d\.\d\d)-(\d\.\d\d) s a step and (\d+)-(\d+) s of training for (\d+) of the "
                   r"(\d+) runs") == (f"{math.floor(min(per_step) * 100) / 100:.2f}",
                                      f"{math.ceil(max(per_step) * 100) / 100:.2f}", str(math.floor(min(seconds))),
                                      str(math.ceil(max(seconds))), str(len(rest)), str(len(runs)))
    fraction, method, seed = re.search(r"fraction_([\d.]+)/(\w+)/seed_(\d)", slowest).groups()
    name = {"baseline": "the baseline", "acgan": "AC-GAN-BERT", "ganbert": "GAN-BERT"}[method]
    assert claimed("docs/acgan.md", r"one run, (.+?) at fraction ([\d.]+), seed (\d), took (\d\.\d\d) s a step and "
                   r"(\d+) s") == (name, fraction, seed, f"{runs[slowest]['seconds_per_step']:.2f}",
                                   str(math.ceil(runs[slowest]["train_seconds"])))
    probe = [r["collapse"]["probe_real_accuracy"] for path, r in runs.items() if "/acgan/" in path]
    assert claimed("docs/acgan.md", r"held-out real dev embeddings at (0\.\d\d)-(0\.\d\d)") == (
        f"{math.floor(min(probe) * 100) / 100:.2f}", f"{math.ceil(max(probe) * 100) / 100:.2f}")


def test_pretraining_doc_names_the_files_of_an_exported_encoder(tiny_bert_dir):
    """docs/pretraining.md lists what WORKDIR/hf_model/ holds; save_hf_model (what the pre-trainer exports with,
    and write_random_bert, which made tiny_bert_dir) writes those weights."""
    from jaxmt.models.hf_checkpoint import MSGPACK_FILE, SAFETENSORS_FILE

    (listed,) = claimed("docs/pretraining.md", r"`WORKDIR/hf_model/` \(config.json, (\S+)")
    written = {p.name for p in tiny_bert_dir.iterdir()}
    assert listed == SAFETENSORS_FILE and {"config.json", SAFETENSORS_FILE} <= written
    assert MSGPACK_FILE not in written


def test_results_epoch_example_counts_the_quora_rows_the_runs_trained_on():
    from configs import paper_a_bert_base

    config = paper_a_bert_base.get_config()
    (rows,) = {r["data"]["train_sizes"]["para"] for r in records("docs/runs/paper_a/*/seed*/results.json").values()}
    epochs, batch, pairs, steps = claimed("docs/results.md", r"`num_epochs` \(the paper's config: (\d+)\).*?with "
                                          r"batches of (\d+) on the shared Quora file's ([\d,]+) labelled pairs, "
                                          r"([\d,]+) steps an epoch")
    assert (float(epochs), int(batch)) == (config.num_epochs, config.tasks.para.batch_size)
    assert (int(pairs.replace(",", "")), int(steps.replace(",", ""))) == (rows, math.ceil(rows / int(batch)))
