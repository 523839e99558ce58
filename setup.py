"""Packages of the jaxmt distribution (the rest of its metadata is in setup.cfg).

The experiment configs live at the top of the checkout (configs/, used as `--config=configs/NAME.py`);
the wheel installs them as the package `jaxmt.configs`, where `jaxmt.cli` finds them when a run is
started outside a checkout. setup.cfg alone cannot map one folder into another package's namespace.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["jaxmt", "jaxmt.*"]), "jaxmt.configs"],
    package_dir={"jaxmt.configs": "configs"},
)
