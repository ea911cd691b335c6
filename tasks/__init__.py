"""The domain shared by the API and the worker: settings, schema, the archive batch, errors.

Nothing here imports ``api`` or ``worker``: dependencies point ``api -> tasks <- worker``.
"""
