"""Paper A's setting (Sun & Satish: multitask BERT on SST-5, Quora and STS) on BERT-base, for accelerators.

BERT-base-uncased by its Hugging Face Hub id, `bert-base-uncased`: a folder of that name in the working
directory if there is one, else the Hub model, fetched once into the Hugging Face cache (config.json,
model.safetensors, tokenizer files) and read from there afterwards (offline too); or
`--config.model.name=/path/to/bert-base-uncased`, a local directory.
What the paper states: batch size 8, learning rate 1e-5, dropout 0.3, PCGrad, each sentence of a pair
encoded alone. What is ours: the step count, the per-epoch evaluation and everything not set here
(configs/default.py); docs/results.md ("Readings of the paper") says how each switch reads the paper.
"""

from . import default


def get_config():
    config = default.get_config()
    config.model.name = "bert-base-uncased"  # Hugging Face Hub id (or a local folder of that name; see above)
    config.model.pair_mode = "siamese"  # each sentence of a pair encoded alone, then [u; v; |u-v|; u*v]
    config.model.dropout = 0.3  # the paper's dropout before the heads
    config.optim.learning_rate = 1e-5  # the paper's learning rate
    config.optim.gradient_surgery = "pcgrad"  # gradient surgery between the tasks
    config.sampling = "all"  # PCGrad needs every task's gradient at every step
    for task in config.tasks.values():
        task.batch_size = 8  # the paper's batch size, per task and step
    config.data.source = "csv"  # the CS224N files in data.csv_dir
    # 3 epochs of the largest task (Quora) at the paper's batch size; ours, not the paper's. The trainer sets
    # num_steps from it with the epoch eval_every_epochs counts (ceil(train rows / examples a step)), logs both and
    # writes them to results.json (steps, eval_every); a larger Quora file gives the same 3 epochs in more steps.
    # For a fixed step count instead: --config.num_epochs=0 --config.num_steps=N.
    config.num_epochs = 3.0
    config.eval_every_epochs = 1.0  # a dev evaluation (and best checkpoint) per epoch of the largest task
    config.checkpoint_every = 1000  # steps between checkpoints for resumption
    config.log_every = 50  # steps between training-metric logs
    return config
