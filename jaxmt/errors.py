"""Errors about the run's configuration, shared by every layer that reads the config."""


class ConfigError(ValueError):
    """A config value that cannot work; raised before any data is read or code compiled."""
