"""Errors a user can act on: each names the file, line and field that is wrong."""


class DataError(ValueError):
    """A data file or dataset that cannot be read as the task expects."""


def location(path: object, line: int | None = None, field: str | None = None) -> str:
    """`path:line (field 'x')`, the prefix every data error message starts with."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f" (field {field!r})"
    return text
