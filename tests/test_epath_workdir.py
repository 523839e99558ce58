"""A workdir on a filesystem that is not POSIX (gs:// on a pod): every record a run writes goes through
etils.epath. Here `gs://` is an fsspec in-memory filesystem (epath's test mock), so nothing can silently
fall back to `open()` on a local path: anything not written through epath would land under a local `gs:`
folder, or fail, and the test checks that neither happens.

Every entry point family is run on it with its inputs there too: train (the toy loop), pretrain with its corpus
and shard cache, probe, the sweep with its GAN runs' PCA files, tables, plots and archive, summarize, QA with its
SQuAD files and predictions, SICK, a TFDS data_dir, and the model folder.

Orbax checkpoints are not covered here: Orbax writes gs:// arrays through TensorStore's own GCS driver, which
this mock cannot reach (the runs here keep no checkpoints, as a sweep's runs do)."""

import contextlib
import dataclasses
import json
import os
from pathlib import Path

import fsspec
import numpy as np
import pytest
from conftest import with_overrides
from etils.epath import testing as epath_testing
from test_acgan import demo_data  # noqa: F401 (a fixture)
from test_downstream import qa_bert, squad_items, tiny_qa_config  # noqa: F401 (qa_bert: a fixture)
from test_loop import toy_config, toy_program
from test_pretraining import bert_dir, tiny_pretrain_config  # noqa: F401 (bert_dir: a fixture)

from jaxmt.checkpointing.workdir import read_run_config
from jaxmt.cli import check_output_dir
from jaxmt.data.errors import DataError
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


# ------------------------------------------------ every entry point family, inputs and records on gs://
# Each run below keeps no Orbax checkpoints (`no_checkpoints`): Orbax reaches gs:// through TensorStore's own
# GCS driver, which this mock cannot serve. Everything else a command reads or writes goes to the mock.


@pytest.fixture
def no_checkpoints(monkeypatch):
    """Runs the shared loop as a sweep's runs run it: records only, no Orbax checkpoints."""
    run = loop.run
    monkeypatch.setattr(loop, "run", lambda program, config, workdir: run(
        dataclasses.replace(program, checkpoints=False), config, workdir))


def wikitext(articles: int, sentences: list[str]) -> str:
    """WikiText-style text (a byte-order mark, ` = Title = ` articles, ` = = Section = = ` headings)."""
    lines, per_article = ["\ufeff"], len(sentences) // articles
    for a in range(articles):
        lines += [f" = Article {a} = ", "", " = = Section = = ", ""]
        chunk = sentences[a * per_article:(a + 1) * per_article]
        lines += [" " + " ".join(chunk[i:i + 6]) + " " for i in range(0, len(chunk), 6)]
    return "\n".join(lines) + "\n"


def records(fs, root: str) -> set[str]:
    """The file names under `root` on the mock, relative to it."""
    return {f.removeprefix(root + "/") for f in fs.find(root)}


@pytest.mark.filterwarnings("ignore:lbfgs failed to converge")  # 5 probe steps: the plumbing, not the probe
def test_pretraining_and_probing_read_from_gs_and_write_every_record_there(
        tmp_path, monkeypatch, bert_dir, no_checkpoints):  # noqa: F811 (an imported fixture)
    """jaxmt.pretrain with its corpus, its tokenized-shard cache and its workdir on gs://, then jaxmt.probe of
    the exported gs:// model on a gs:// corpus into a gs:// folder, then summarize --probes over it."""
    from test_probing import synthetic_sentences

    from jaxmt.pretraining.corpus import CorpusSpec, load_corpus
    from jaxmt.pretraining.trainer import load_tokenizer, pretrain
    from jaxmt.probe import run_probing
    from jaxmt.summarize import probes_table

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the gs:// model folder is fetched to
    corpus = "gs://bucket/corpus/wiki.txt"
    config = tiny_pretrain_config(bert_dir, corpus, "gs://bucket/shards", num_steps=2, log_every=1,
                                  checkpoint_every=2)
    with memory_gcs() as fs:
        fs.pipe("/gs/bucket/corpus/wiki.txt", wikitext(8, synthetic_sentences(240)).encode())
        results = pretrain(config, "gs://bucket/pretrain")
        assert results["steps"] == 2 and set(results["heldout"]) >= {"mlm/loss", "nsp/loss"}
        written = records(fs, "/gs/bucket/pretrain")
        assert {"config.json", "metrics.jsonl", "results.json", "hf_model/config.json"} <= written, written
        assert any(f.startswith("hf_model/") and f.endswith((".msgpack", ".safetensors")) for f in written)
        assert json.loads(fs.cat("/gs/bucket/pretrain/results.json"))["steps"] == 2
        shards = fs.find("/gs/bucket/shards")
        assert len(shards) == 1 and shards[0].endswith(".npz")  # the tokenized corpus, cached on gs://
        tokenizer = load_tokenizer(str(bert_dir))
        again = load_corpus(CorpusSpec.from_config(config.data), _NoTokenizing(tokenizer), "gs://bucket/shards")
        assert again.num_documents == 8 and again.source == corpus  # read back from the shard, not tokenized

        summary = run_probing({"pretrained": "gs://bucket/pretrain/hf_model"}, corpus, "gs://bucket/probe/seed0",
                              ["sentence_length", "bigram_shift"], max_sentences=60, seed=0, max_length=32,
                              batch_size=32, probe_steps=5, l2=1e-3)
        assert summary["corpus"] == corpus and summary["seen_in_pretraining"] == {"pretrained": True}
        assert records(fs, "/gs/bucket/probe/seed0") == {"results.csv", "results.md", "heatmap.png", "results.json"}
        assert fs.cat("/gs/bucket/probe/seed0/heatmap.png")[:4] == b"\x89PNG"
        rows = fs.cat("/gs/bucket/probe/seed0/results.csv").decode().splitlines()
        assert rows[0] == "model,layer,layer_name,task,accuracy" and len(rows) == 1 + 2 * 4 + 2
        assert "seen in pre-training: pretrained yes." in fs.cat("/gs/bucket/probe/seed0/results.md").decode()
        assert json.loads(fs.cat("/gs/bucket/probe/seed0/results.json"))["files"]["heatmap"] == \
            "gs://bucket/probe/seed0/heatmap.png"
        assert "### sentence_length" in probes_table("gs://bucket/probe/seed*", "")
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


class _NoTokenizing:
    """A tokenizer that may be fingerprinted but not called: what a cache hit needs."""

    def __init__(self, tokenizer) -> None:
        self.backend_tokenizer, self.unk_token = tokenizer.backend_tokenizer, tokenizer.unk_token

    def __call__(self, *args, **kwargs):
        raise AssertionError("tokenized again: the gs:// shard was not read")


def test_the_sweep_writes_its_runs_pca_files_tables_plots_and_archive_to_gs(
        tmp_path, monkeypatch, demo_data):  # noqa: F811 (an imported fixture)
    """jaxmt.sweep (GAN-BERT through the real GAN trainer: its pca.png and pca.npz) with its workdir and its
    archive on gs://, a second sweep continuing from that archive, then summarize's glob and archive there."""
    import jaxmt.gan.build
    from jaxmt.gan.fractions import run_sweep
    from jaxmt.summarize import archive_runs, parse_arms, read_scores

    monkeypatch.chdir(tmp_path)
    config, data = demo_data
    monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: data)  # tokenized once a module
    config = with_overrides(config.copy_and_resolve_references(), num_steps=2, log_every=1)
    with memory_gcs() as fs:
        rows = run_sweep(config, "gs://bucket/sweep", [0.25], ("ganbert",), seeds=[3], archive="gs://bucket/archive")
        assert [(r["method"], r["steps"], r["workdir"]) for r in rows] == [
            ("ganbert", 2, "gs://bucket/archive/fraction_0.25/ganbert/seed_3")]
        tables = {"results.csv", "results.md", "accuracy.png", "checks.png", "p_real.png", "pca_ganbert.png"}
        run_records = {f"fraction_0.25/ganbert/seed_3/{r}" for r in ("config.json", "metrics.jsonl", "results.json",
                                                                      "pca.png", "pca.npz")}
        for root in ("/gs/bucket/sweep", "/gs/bucket/archive"):
            written = records(fs, root)
            assert tables | run_records <= written, (root, (tables | run_records) - written)
        assert "fraction_0.25/ganbert/pca_seeds.png" in records(fs, "/gs/bucket/archive")  # beside the seeds' runs
        with fs.open("/gs/bucket/sweep/fraction_0.25/ganbert/seed_3/pca.npz", "rb") as f, np.load(f) as points:
            assert points["real_2d"].shape == (len(points["real_y"]), 2)
        assert fs.cat("/gs/bucket/sweep/results.csv").decode().startswith("labeled_fraction,labeled_examples,")

        calls = []  # a second sweep into a fresh workdir trains nothing: the gs:// archive has every run
        monkeypatch.setattr(jaxmt.gan.build, "load_gan_data", lambda config: calls.append(1))
        assert len(run_sweep(config, "gs://bucket/sweep2", [0.25], ("ganbert",), seeds=[3],
                             archive="gs://bucket/archive")) == 1 and not calls

        arms = parse_arms(["sweep=gs://bucket/archive/fraction_*/*/seed_3"])
        assert arms["sweep"] == [r["workdir"] for r in rows]
        assert "class_fidelity" in read_scores("gs://bucket/archive/fraction_0.25/ganbert/seed_3", "collapse")
        archive_runs(arms, "gs://bucket/docs_runs")
        assert records(fs, "/gs/bucket/docs_runs/sweep/seed_3") == {"config.json", "metrics.jsonl", "results.json"}
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


def test_qa_reads_squad_from_gs_and_writes_its_predictions_and_records_there(
        tmp_path, monkeypatch, qa_bert, no_checkpoints):  # noqa: F811 (an imported fixture)
    from jaxmt.downstream.qa_train import train_and_evaluate_qa

    monkeypatch.chdir(tmp_path)
    config = tiny_qa_config(qa_bert, "gs://bucket/squad/train.json", num_steps=2, checkpoint_every=2)
    config.data.dev_file = "gs://bucket/squad/dev.json"
    with memory_gcs() as fs:
        for name in ("train", "dev"):
            fs.pipe(f"/gs/bucket/squad/{name}.json", json.dumps(squad_items()).encode())
        results = train_and_evaluate_qa(config, "gs://bucket/qa")
        assert results["steps"] == 2 and set(results["dev"]) == {"exact_match", "f1"}
        assert {"config.json", "metrics.jsonl", "results.json", "predictions.json"} <= records(fs, "/gs/bucket/qa")
        assert set(json.loads(fs.cat("/gs/bucket/qa/predictions.json"))) == {"b1", "b2", "c1", "c2", "t1", "t2"}
        with pytest.raises(DataError, match="gs://bucket/squad/missing.json: file not found"):
            train_and_evaluate_qa(with_overrides(config, **{"data.dev_file": "gs://bucket/squad/missing.json"}),
                                  "gs://bucket/qa_missing")
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


def test_sick_is_read_from_gs_and_keeps_its_gs_name(tmp_path, monkeypatch):
    from test_downstream import _sick_rows

    from configs import entailment
    from jaxmt.data.sources import load_split, task_specs

    monkeypatch.chdir(tmp_path)
    with memory_gcs() as fs:
        header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        fs.pipe("/gs/bucket/sick/SICK.txt", (header + "".join("\t".join(map(str, r)) + "\n"
                                                               for r in _sick_rows(40))).encode())
        config = with_overrides(entailment.get_config("sick"), **{"data.sick_file": "gs://bucket/sick/SICK.txt",
                                                                   "data.sick_split": (1.0, 0.0, 0.0)})
        split = load_split(config, task_specs(config)["nli"], "train")
        assert len(split) == 40 and split.source == "gs://bucket/sick/SICK.txt[train]"
        fs.pipe("/gs/bucket/sick/bad.txt", (header + "1\ta\tb\t3.0\tMAYBE\n").encode())
        with pytest.raises(DataError, match="gs://bucket/sick/bad.txt:2"):
            bad = {"data.sick_file": "gs://bucket/sick/bad.txt", "data.on_bad_row": "error"}
            load_split(with_overrides(config, **bad), task_specs(config)["nli"], "train")
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


def test_a_gs_tfds_data_dir_reaches_tfds_as_it_is(tmp_path, monkeypatch):
    """TFDS finds a dataset prepared under a gs:// data_dir through epath; the records themselves TFDS reads
    with array_record's own file layer (GCS on a pod), which this mock cannot serve, as Orbax's TensorStore."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from test_tfds_source import SST, JaxmtTinySst

    from jaxmt.data.tfds_source import open_builder
    from jaxmt.pretraining.corpus import CorpusSpec, check_corpus_spec

    prepared = tmp_path / "tfds"
    JaxmtTinySst(data_dir=str(prepared), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    monkeypatch.chdir(tmp_path)
    with memory_gcs() as fs:
        for file in prepared.rglob("*"):
            if file.is_file():
                fs.pipe(f"/gs/bucket/tfds/{file.relative_to(prepared)}", file.read_bytes())
        builder = open_builder(tfds, SST, "gs://bucket/tfds")
        assert builder.is_prepared() and os.fspath(builder.data_dir).startswith("gs://bucket/tfds/jaxmt_tiny_sst/")
        with pytest.raises(DataError, match="not prepared under gs://bucket/elsewhere"):
            open_builder(tfds, SST, "gs://bucket/elsewhere")
        with pytest.raises(DataError, match=r"gs://bucket/corpus/none.txt: corpus file not found \(config.data"):
            check_corpus_spec(CorpusSpec(files=("gs://bucket/corpus/none.txt",)))
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())
