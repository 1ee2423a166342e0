"""The one exception the torch side raises for bad input (a config, a checkpoint folder)."""


class InputError(Exception):
    """Bad input from the user: reported as one line, never a traceback."""
