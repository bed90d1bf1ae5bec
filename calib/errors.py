"""User-facing errors: one line, what and where, exit code 2 from the CLI."""


class DetcalError(Exception):
    """A problem with the user's input (file, option, data), not a bug in detcal.

    The CLI prints ``detcal: error: <message>`` and exits with code 2, no traceback.
    The message names the file (and line, where there is one) and what is wrong.
    """
