"""What the commands do once their arguments parse: one function per job, its options in one
object. A job raises JobError with a one-line message; the command prints it and exits 2."""

from __future__ import annotations


class JobError(Exception):
    """A job could not run: the message is one line, worded for the person at the terminal."""
