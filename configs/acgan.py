"""AC-GAN-BERT: semi-supervised SST-5 with a conditional generator and a discriminator on MiniLM embeddings.

Train with `python -m jaxmt.acgan --config=configs/acgan.py --workdir=runs/acgan`, or compare
against the plain fine-tuned baseline over labeled fractions with `python -m jaxmt.sweep`.
"""

from ml_collections import ConfigDict, config_dict

from . import default


def get_config() -> ConfigDict:
    config = default.get_config()
    config.unlock()
    config.task_names = ("sst",)
    config.data.buckets = (32, 64)
    config.data.max_length = 64
    config.eval_every = 0
    config.gan = ConfigDict(dict(
        method="acgan",  # acgan: GAN training of encoder+D and G | baseline: plain fine-tuning on the labeled subset
        form="acgan",  # discriminator: acgan (real/fake logit + K-way class head) | ganbert (K+1 logits, last = fake)
        update_order="simultaneous",  # simultaneous: D and G from the same params | alternating: G sees the updated D
        labeled_fraction=0.1,  # share of the training set that keeps its labels (class-stratified, seeded, fixed)
        min_labeled_per_batch=4,  # labeled rows in every batch at least (oversampling a small labeled pool)
        # how labeled rows enter batches: none (min_labeled_per_batch rows a batch at least) | log2 (the reference
        # GAN-BERT's apply_balance: each labeled row int(log2(int(1/rate))) times in one shuffled pool with the
        # unlabeled rows, so a batch's labeled share varies around that of the pool)
        labeled_copies="none",
        fake_batch_size=0,  # generated rows a step (0 = the task's batch size)
        # G's conditioning labels: uniform (fake_batch_size random classes) | batch (one fake a real row, conditioned
        # on its label, an unlabeled row's on an extra "no label" slot: the AC-GAN-BERT authors' code)
        fake_labels="uniform",
        noise_dim=100,  # size of G's uniform noise z
        g_layers=1,  # G's hidden layers
        g_width=0,  # G's hidden width (0 = the encoder's feature dim)
        g_dropout=0.1,  # dropout after each hidden layer of G
        d_layers=1,  # D's hidden layers (>= 1: feature matching reads the last one)
        d_width=0,  # D's hidden width (0 = the encoder's feature dim)
        d_dropout=0.1,  # dropout on D's input and after each hidden layer
        leaky_slope=0.2,  # negative slope of the leaky ReLUs of G and D
        g_learning_rate=5e-5,  # G's peak AdamW learning rate (D's, config.optim.learning_rate: the reference's choice)
        # G's schedule: same_as_d (D's warm-up + linear decay and weight decay, peaking at g_learning_rate, as the
        # reference GAN-BERT) | constant (g_learning_rate from step 0 on, no weight decay: issue 16's sweep, 1e-4)
        g_schedule="same_as_d",
        weights=dict(
            d_supervised=1.0,  # D: cross-entropy on labeled real examples
            d_unsupervised=1.0,  # D: real-vs-fake on all real and fake examples
            d_fake_class=1.0,  # D, acgan form only: class loss of fakes for their conditioning label
            g_fool=1.0,  # G: non-saturating fooling loss
            g_feature_matching=1.0,  # G: GAN-BERT feature matching (mean D features, real vs fake)
            # G: fakes classified as their conditioning label. Unset: 1.0 for form=acgan, 0.0 for form=ganbert
            # (pure GAN-BERT: G trained by fooling and feature matching alone); set it to use it with ganbert too
            g_class=config_dict.placeholder(float),
            # G: feature matching per class (each class's fakes to the mean D features of its labeled real rows)
            g_class_feature_matching=0.0,
            # G: the same per-class matching on the embeddings themselves (D's input, where the fidelity probe reads)
            g_class_embedding_matching=0.0,
        ),
        collapse_examples=1000,  # dev rows whose real embeddings the mode-collapse checks compare against
        collapse_fakes_per_class=200,  # generated embeddings per class for the mode-collapse checks
        save_checkpoints=True,  # Orbax checkpoints for resumption (the sweep turns them off)
    ))
    config.lock()
    return config
