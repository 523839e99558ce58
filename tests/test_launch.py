import subprocess

from conftest import ROOT


def run(*args):
    return subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), *args], capture_output=True, text=True)


def test_local_dry_run_prints_the_exact_command():
    out = run("--cpu-devices", "4", "--python", "py", "--dry-run", "--", "--config=configs/pcgrad.py", "--workdir=w")
    assert out.returncode == 0
    assert out.stdout.split() == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=4",
                                  "py", "-m", "jaxmt.train", "--config=configs/pcgrad.py", "--workdir=w"]


def test_local_dry_run_runs_the_module_given():
    out = run("--module", "jaxmt.pretrain", "--python", "py", "--dry-run", "--",
              "--config=configs/pretrain_hierarchical.py", "--workdir=w")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["env", "py", "-m", "jaxmt.pretrain", "--config=configs/pretrain_hierarchical.py",
                                  "--workdir=w"]


def test_local_rejects_bad_options():
    bad = run("--cpu-devices", "two", "--dry-run")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    unknown = run("--workdir=w")
    assert unknown.returncode == 2 and "trainer flags go after --" in unknown.stderr
    for module in ("jaxmt.trian", "os", "jaxmt.train; rm -rf x"):
        bad_module = run("--module", module, "--dry-run")
        assert bad_module.returncode == 2 and "is not a jaxmt command" in bad_module.stderr, module
