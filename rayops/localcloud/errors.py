"""Errors of the local cloud: each carries one sentence for the user."""


class LocalCloudError(RuntimeError):
    """Something the user must fix before the local cloud can run; str() is the whole message."""
