"""The one exception type for bad user input.

Entry points catch `LMTrainError`, print its message as a single line and exit non-zero, so a
researcher sees what to change instead of a traceback. Anything else is a bug and keeps its trace.
"""


class LMTrainError(Exception):
    """A problem with the user's input: the message names the bad value and what to do instead."""
