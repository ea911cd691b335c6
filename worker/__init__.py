"""How the Celery worker process boots: signals, per-process engine, the ``celery -A`` target."""
