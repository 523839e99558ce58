"""Command line: python -m jaxmt.pretrain --config=configs/pretrain_hierarchical.py --workdir=DIR [--config.x.y=v]
(or jaxmt-pretrain).

Pre-trains BERT with masked LM, NSP and bigram shift at configurable encoder layers, prints the held-out
results and leaves the encoder in DIR/hf_model/ for fine-tuning (--config.model.name=DIR/hf_model).
"""

from jaxmt.cli import trainer_command

run = trainer_command(
    "configs/pretrain_hierarchical.py", "runs/pretrain", "jaxmt.pretraining.trainer:pretrain",
    kind=("transfer", "this is not a pre-training config: use configs/pretrain_bert.py or "
                      "configs/pretrain_hierarchical.py"))

if __name__ == "__main__":
    run()
