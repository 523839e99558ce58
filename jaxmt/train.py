"""Command line: python -m jaxmt.train --config=configs/pcgrad.py --workdir=DIR [--config.x.y=v] (or jaxmt-train).

Multitask fine-tuning (jaxmt.training.trainer.train_and_evaluate); prints results.json.
"""

from jaxmt.cli import trainer_command

run = trainer_command("configs/pcgrad.py", "runs/default", "jaxmt.training.trainer:train_and_evaluate")

if __name__ == "__main__":
    run()
