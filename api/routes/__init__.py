"""The API's routes, one router per concern; ``api.app.create_app`` includes them all.

A new kind of job is one more route here (its request model declared in ``tasks``): it takes an
``Owner`` (authentication) and ``Svc`` (the collaborators) and hands the request to
``api.routes.submit.submit_job`` with its model and path, which reads the body with
``api.body.read_json_object``, validates it, admits and publishes the job (every Redis call wrapped
in ``api.services.guard``); ``submit_route`` documents it. ``archive``, ``selection`` and
``dearchive`` are three.
"""
