"""Command line: python -m jaxmt.qa --config=configs/squad.py --workdir=DIR [--config.data.train_file=...]
(or jaxmt-qa). Extractive QA fine-tuning and SQuAD scoring; predictions in DIR/predictions.json.
"""

from jaxmt.cli import trainer_command

run = trainer_command("configs/squad.py", "runs/squad", "jaxmt.downstream.qa_train:train_and_evaluate_qa",
                      hidden_results=("train_loss",))

if __name__ == "__main__":
    run()
