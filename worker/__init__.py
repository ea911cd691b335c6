"""How the Celery worker process boots: its options and metrics server (``worker.main``), signals
and per-process runtime (``worker.app``, the ``celery -A`` target), bootsteps and broker classes."""
