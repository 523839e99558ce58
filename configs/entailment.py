"""Textual entailment: 3-way NLI (entailment / neutral / contradiction) fine-tuned from any pre-trained encoder.

One task, `nli` (classification, sentence pairs, 3 classes), trained by the multitask trainer:

    python -m jaxmt.train --config=configs/entailment.py --workdir=runs/nli_sick \\
        --config.model.name=WORKDIR/hf_model          # or minilm, or any local HF BERT dir

The part after a colon picks the data: `sick` (default; ../shared/data/sick/SICK.txt split 80/10/10
by a hash of pair_ID), or a prepared TFDS dataset: `snli`, `mnli` (glue/mnli, matched dev/test),
`mnli_mismatched`, `rte` (glue/rte: entailment 0 / not_entailment 1, the third class stays unused),
e.g. `--config=configs/entailment.py:snli --config.data.tfds_data_dir=DIR`. Labels follow TFDS's
order (entailment 0, neutral 1, contradiction 2) whatever the source.
"""

from ml_collections import ConfigDict

from . import default

# preset -> (TFDS name, our split -> the dataset's split); field mappings come from jaxmt.data.tfds_source.
TFDS_PRESETS = {
    "snli": ("snli", dict(train="train", dev="validation", test="test")),
    "mnli": ("glue/mnli", dict(train="train", dev="validation_matched", test="test_matched")),
    "mnli_mismatched": ("glue/mnli", dict(train="train", dev="validation_mismatched", test="test_mismatched")),
    "rte": ("glue/rte", dict(train="train", dev="validation", test="test")),
}


def get_config(data: str = "sick") -> ConfigDict:
    config = default.get_config()
    config.unlock()
    config.task_names = ("nli",)
    config.tasks.nli = default.task("classification", pair=True, num_classes=3, batch_size=32)
    if data == "sick":
        config.data.source = "sick"
    elif data in TFDS_PRESETS:
        name, splits = TFDS_PRESETS[data]
        config.data.source = "tfds"
        config.tasks.nli.tfds.name = name
        config.tasks.nli.tfds.splits = splits
    else:
        raise ValueError(f"configs/entailment.py: unknown data {data!r}; choose sick or one of {sorted(TFDS_PRESETS)}")
    config.data.buckets = (32, 64, 128)
    config.data.max_length = 128
    config.model.pair_mode = "cross"  # [CLS] premise [SEP] hypothesis [SEP]: the usual NLI input
    config.model.pooling = "mean"
    config.optim.learning_rate = 3e-5
    config.num_steps = 1500  # about 6 epochs of SICK's ~7.9k training pairs at batch 32
    config.eval_every = 250
    config.checkpoint_every = 250
    config.lock()
    return config
