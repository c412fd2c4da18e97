"""The plain-RQ baseline's job: a module-level function in a module that imports nothing.

A forking worker imports a job's module in every work horse (the parent never imported it), so
the baseline keeps that import as cheap as it can be.
"""


def noop() -> None:
    return None
