"""The one exception type for bad user input."""


class UsageError(ValueError):
    """Bad input from a user (a flag, a form field, a file). The CLI prints it on one line and
    exits with code 2; the app shows it in place. The message names the field and what is allowed."""


def check_fields(cls, data: dict, what: str) -> dict:
    """`data` for the dataclass `cls`, refusing any key it does not know, by name (configs read back
    from JSON: a job's payload, a model's recipe)."""
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise UsageError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    return dict(data)
