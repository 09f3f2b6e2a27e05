"""User-facing errors.

Every problem caused by the user's input (a malformed file, a bad config value, a
missing dataset) is raised as :class:`FastleadingError` with ONE line that names the
file or field and says what was expected. The CLI prints that line and exits 2;
everything else is a bug and keeps its traceback.
"""


class FastleadingError(Exception):
    """A one-line, user-facing error (bad input, bad config, missing data)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
