"""What the tests, the benchmarks and the soak runs share: the service's processes and free
ports, polling, private MariaDB and Redis servers, the dialer simulator, the byte-for-byte
reading of the lead tables, test settings, a live API and worker, and the fault scenarios.

It is no part of the installed service (the wheel ships ``api``, ``tasks``, ``worker`` and
``leadarchive`` only) and imports nothing from ``tests``, ``bench`` or ``soak``: they import it.
"""
