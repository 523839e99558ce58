"""Downstream evaluation of a pre-trained encoder: entailment (SICK / TFDS NLI) and extractive QA (SQuAD)."""
