"""The one exception type users see: the CLI prints its message as one red line and exits non-zero."""


class SeawallError(Exception):
    """A problem with the user's input or environment, with a message that says what and where."""


class DataError(SeawallError):
    """A data file is missing, malformed, or holds values outside the expected set."""


class ModelError(SeawallError):
    """A model reference cannot be resolved, or a checkpoint does not match what was expected."""
