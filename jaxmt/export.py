"""Command line: python -m jaxmt.export --workdir=DIR --out=HF_DIR [--checkpoint=best|latest] (or jaxmt-export).

Writes a trained run's fine-tuned encoder as a Hugging Face BERT directory (config.json, model.safetensors,
tokenizer files), for `transformers.BertModel` / `FlaxBertModel` or another jaxmt run
(`--config.model.name=HF_DIR`). The pooler is the pretrained model's own (fine-tuning never trains it); a
model without one is written without one (`jaxmt_export.add_pooling_layer: false` in config.json; load it
with `BertModel.from_pretrained(HF_DIR, add_pooling_layer=False)`), never with random weights. When the run
pools by mean or [CLS] (`model.pooling`), the folder is also a sentence-transformers model (modules.json,
1_Pooling/config.json, sentence_bert_config.json): `SentenceTransformer(HF_DIR).encode` gives the run's
sentence embeddings. The Python API is `jaxmt.inference.TrainedModel(workdir).export_encoder(path)`.
"""

from __future__ import annotations

from absl import app, flags

from jaxmt.cli import check_output_dir, parse_flags, setup_logging
from jaxmt.paths import is_local, local_staging


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints).", required=True)
    flags.DEFINE_string("out", None, "The Hugging Face directory to write.", required=True)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint's encoder to export.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.inference import TrainedModel
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        check_output_dir(flags.FLAGS.out, "--out")
        model = TrainedModel(flags.FLAGS.workdir, flags.FLAGS.checkpoint)
        with local_staging(flags.FLAGS.out) as local:  # Hugging Face writes local files; gs:// gets a copy
            path = model.export_encoder(local)
    print(path if is_local(flags.FLAGS.out) else flags.FLAGS.out)


def run() -> None:
    """The `jaxmt-export` console script (and `python -m jaxmt.export`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
