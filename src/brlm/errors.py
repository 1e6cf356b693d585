"""User-facing errors. The CLI turns a BrlmError into one line on stderr and exit code 2."""


class BrlmError(Exception):
    """A problem with the user's input: names the file, field or flag and what was expected."""


class ConfigError(BrlmError):
    """A bad config key or value (preset, config.yaml or --set)."""


class DataError(BrlmError):
    """A missing, unreadable or unusable input file or corpus."""
