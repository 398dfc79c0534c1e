"""The one exception type for failures a user can fix."""


class InfinipotError(Exception):
    """A user-facing failure. The message names the problem and the fix, in one line."""
