"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (paths, files, options), not a bug.

    The message must be one line that says what is wrong and, where possible, what to do.
    """
