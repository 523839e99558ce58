"""Command line: python -m jaxmt.acgan --config=configs/acgan.py --workdir=DIR [--config.x.y=v] (or jaxmt-acgan).

Trains AC-GAN-BERT (gan.method='acgan') or its baseline (configs/acgan_baseline.py) and prints the results.
"""

from jaxmt.cli import trainer_command

run = trainer_command(
    "configs/acgan.py", "runs/acgan", "jaxmt.gan.trainer:train_gan_or_baseline",
    kind=("gan", "this config has no `gan` block: use configs/acgan.py or configs/acgan_baseline.py"))

if __name__ == "__main__":
    run()
