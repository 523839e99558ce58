"""AC-GAN-BERT in its authors' form, trained as the reference GAN-BERT trains (issue 32).

The authors' public code (github csun365/ganbert, ganbert_test.py @957242c, a PyTorch GAN-BERT loop)
conditions G on each real row's label and keeps GAN-BERT's K+1 discriminator and losses: no separate
real/fake head, no class loss on fakes for D or G. Here: `gan.form='ganbert'` (K+1 logits, GAN-BERT's
losses; `gan.weights.g_class` unset resolves to 0 for it), `gan.fake_labels='batch'` (one fake a real row,
conditioned on its label; an unlabeled row's on G's extra "no label" slot), and the authors' G and D
sizes. The labeled mix (`gan.labeled_copies='log2'`), G's schedule (`gan.g_schedule='same_as_d'`, peak
= D's) and batch 64 follow the reference GAN-BERT (crux82/ganbert). docs/acgan.md ("The paper's form")
gives the file and line each choice follows and what is not followed.
"""

from ml_collections import ConfigDict

from . import acgan


def get_config() -> ConfigDict:
    config = acgan.get_config()
    config.tasks.sst.batch_size = 64  # the reference's and the authors' batch (run_experiment.sh BS, batch_size)
    gan = config.gan
    gan.form = "ganbert"  # K+1 logits, the last "fake": the authors' Discriminator (num_labels + 1 outputs)
    gan.fake_labels = "batch"  # G(noise, one-hot of each real row's label): the authors' label2one_hot(b_labels)
    gan.labeled_copies = "log2"  # apply_balance = True: each labeled row int(log2(int(1/rate))) times
    gan.g_schedule = "same_as_d"  # the reference: G and D on one warm-up + linear decay schedule
    gan.g_learning_rate = config.optim.learning_rate  # G's peak = D's (the authors' and the reference's choice)
    gan.g_layers = 2  # the authors' num_hidden_layers_g
    gan.d_layers = 3  # the authors' num_hidden_layers_d
    gan.g_dropout = 0.2  # the authors' out_dropout_rate, which they pass to G as well as D
    gan.d_dropout = 0.2  # the authors' out_dropout_rate (D's input and hidden layers)
    return config
