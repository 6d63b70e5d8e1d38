"""User-facing errors: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input from the user (file, option, config). Message says what and where."""


class WorkerError(Exception):
    """A worker process of a command raised or died: reported in one line, exit status 1."""
