"""A workdir on a filesystem that is not POSIX (gs:// on a pod): every record a run writes goes through
etils.epath. Here `gs://` is an fsspec in-memory filesystem (epath's test mock), so nothing can silently
fall back to `open()` on a local path: anything not written through epath would land under a local `gs:`
folder, or fail, and the test checks that neither happens.

Orbax checkpoints are not covered here: Orbax writes gs:// arrays through TensorStore's own GCS driver, which
this mock cannot reach (the toy run keeps no checkpoints, as a sweep's runs do)."""

import contextlib
import json
import os
from pathlib import Path

import fsspec
import pytest
from etils.epath import testing as epath_testing
from test_loop import toy_config, toy_program

from jaxmt.checkpointing.workdir import read_run_config
from jaxmt.cli import check_output_dir
from jaxmt.errors import ConfigError
from jaxmt.evaluate import write_predictions
from jaxmt.paths import local_staging
from jaxmt.plot import plot_run
from jaxmt.training import loop
from jaxmt.training.metric_writers import MetricWriter


@contextlib.contextmanager
def memory_gcs():
    """gs://BUCKET/... served from fsspec's memory filesystem (as /gs/BUCKET/...); other paths untouched."""
    fs = fsspec.filesystem("memory")

    def route(method):
        def mocked(original, path, *args, **kwargs):
            path = os.fspath(path)
            if not path.startswith("gs://"):
                return original(path, *args, **kwargs)
            return method(path.replace("gs://", "/gs/", 1), *args, **kwargs)
        return mocked

    def moved(original, path, dst, *args, **kwargs):
        if not os.fspath(path).startswith("gs://"):
            return original(path, dst, *args, **kwargs)
        fs.mv(os.fspath(path).replace("gs://", "/gs/", 1), os.fspath(dst).replace("gs://", "/gs/", 1))

    with epath_testing.mock_epath(
        open=route(lambda p, mode: fs.open(p, mode)),
        exists=route(fs.exists),
        isdir=route(fs.isdir),
        listdir=route(lambda p: [os.path.basename(f.rstrip("/")) for f in fs.ls(p, detail=False)]),
        glob=route(lambda p: ["gs://" + f.removeprefix("/gs/") for f in fs.glob(p)]),
        makedirs=route(lambda p, exist_ok=False: fs.makedirs(p, exist_ok=True)),
        mkdir=route(lambda p, exist_ok=False: fs.makedirs(p, exist_ok=True)),
        remove=route(fs.rm),
        rmtree=route(lambda p: fs.rm(p, recursive=True)),
        rename=moved,
        replace=moved,
    ):
        try:
            yield fs
        finally:
            if fs.exists("/gs"):
                fs.rm("/gs", recursive=True)


def test_every_record_of_a_run_goes_to_a_gs_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray local write of "gs://..." would appear here as gs:/...
    workdir = "gs://bucket/runs/toy"
    config = toy_config(profile_steps=(3, 2))
    with memory_gcs() as fs:
        check_output_dir(workdir)
        loop.prepare_workdir(config, workdir)
        out = loop.run(toy_program(checkpoints=False), config, workdir)
        loop.write_results(workdir, {"steps": config.num_steps, "dev": out.dev})
        root = "/gs/bucket/runs/toy"
        assert read_run_config(workdir).num_steps == 8
        assert json.loads(fs.cat(f"{root}/results.json"))["steps"] == 8
        rows = [json.loads(line) for line in fs.cat(f"{root}/metrics.jsonl").decode().splitlines()]
        assert sorted({r["step"] for r in rows}) == [2, 4, 6, 8] and any("dev/w0" in r for r in rows)
        assert [f for f in fs.ls(f"{root}/tensorboard", detail=False) if "tfevents" in f]
        traces = fs.glob(f"{root}/profile/plugins/profile/*/*")
        assert any(t.endswith(".xplane.pb") for t in traces) and any(t.endswith("perfetto_trace.json.gz")
                                                                       for t in traces)

        write_predictions(f"{workdir}/predictions/sst-dev-output.csv", "sst", ["a", "b"], [1, 4])
        assert fs.cat(f"{root}/predictions/sst-dev-output.csv").decode().splitlines()[1:] == ["a , 1 ", "b , 4 "]
        assert plot_run(workdir) == f"{workdir}/training.png" and fs.cat(f"{root}/training.png")[:4] == b"\x89PNG"
        with local_staging(f"{workdir}/hf_model") as local:  # for writers that know only local files (export)
            (Path(local) / "config.json").write_text("{}")
        assert fs.cat(f"{root}/hf_model/config.json") == b"{}" and not os.path.exists(local)

        # A resumed run drops the rows after its step on the remote file too, and appends after them.
        writer = MetricWriter(workdir, resume_step=4)
        writer.write(5, {"train/loss": 1.0})
        writer.close()
        steps = [json.loads(line)["step"] for line in fs.cat(f"{root}/metrics.jsonl").decode().splitlines()]
        assert steps == sorted(steps) and steps[-1] == 5 and 8 not in steps

        # A start that failed while loading left only config.json: the corrected config replaces it there too.
        fs.rm(f"{root}/results.json")
        loop.prepare_workdir(toy_config(num_steps=4), workdir)
        assert read_run_config(workdir).num_steps == 4

        fs.pipe("/gs/bucket/a_file", b"x")
        with pytest.raises(ConfigError, match="a_file is a file, not a folder"):
            check_output_dir("gs://bucket/a_file/run")
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


def test_data_files_and_the_model_folder_are_read_from_gs(tmp_path, monkeypatch, tiny_bert_dir):
    from conftest import tiny_config

    from jaxmt.data.sources import load_split, task_specs
    from jaxmt.downstream.squad import read_squad
    from jaxmt.models.pretrained import resolve_model_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with memory_gcs() as fs:
        rows = "".join(f"{i}\tid{i}\tsentence number {i} .\t{i % 5}\n" for i in range(6))
        fs.pipe("/gs/bucket/cs224n/ids-sst-train.csv", ("\tid\tsentence\tsentiment\n" + rows).encode())
        config = tiny_config(tiny_bert_dir, **{"data.source": "csv", "data.csv_dir": "gs://bucket/cs224n"})
        split = load_split(config, task_specs(config)["sst"], "train")
        assert split.labels.tolist() == [0, 1, 2, 3, 4, 0] and split.source == "gs://bucket/cs224n/ids-sst-train.csv"
        assert load_split(config, task_specs(config)["sst"], "test") is None  # no test file there

        squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Ann saw Bob.", "qas": [
            {"id": "q1", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 8}]}]}]}]}
        fs.pipe("/gs/bucket/squad/dev.json", json.dumps(squad).encode())
        assert [e.id for e in read_squad("gs://bucket/squad/dev.json")] == ["q1"]

        for file in tiny_bert_dir.iterdir():
            fs.pipe(f"/gs/bucket/models/tiny/{file.name}", file.read_bytes())
        local = resolve_model_dir("gs://bucket/models/tiny")
        assert local.is_relative_to(tmp_path / "cache")
        assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == sorted(
            p.name for p in tiny_bert_dir.iterdir())
        fs.rm("/gs/bucket/models/tiny", recursive=True)
        assert resolve_model_dir("gs://bucket/models/tiny") == local  # fetched once, then reused
