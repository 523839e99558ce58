"""Experiment configs: Python files with `get_config()`, passed as --config=configs/NAME.py."""
