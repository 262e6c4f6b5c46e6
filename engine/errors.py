"""The one exception type for bad user input."""


class UsageError(ValueError):
    """Bad input from a user (a flag, a form field, a file). The CLI prints it on one line and
    exits with code 2; the app shows it in place. The message names the field and what is allowed."""
