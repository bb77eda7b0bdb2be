"""User-facing errors: the CLI prints these as a message, never as a traceback."""


class DetcliError(Exception):
    """Bad user input or environment (missing file, corrupt data, wrong preset field, …)."""


class PresetError(DetcliError):
    """A preset file or an override that does not validate."""


class DatasetError(DetcliError):
    """A dataset file that is missing, malformed or inconsistent."""


class WriteError(DetcliError):
    """A file that could not be written (full disk, read-only folder); the previous file is intact."""


class NonFiniteLossError(DetcliError):
    """Training produced a NaN/Inf loss."""
