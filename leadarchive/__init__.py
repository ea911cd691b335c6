"""The ``leadarchive`` console script: one entry point over the api, worker and tasks packages."""
