"""The refusal every service raises: a message a person can read and act on."""


class ServiceError(Exception):
    """A refusal with a message for the user (quota, state, permission...)."""
