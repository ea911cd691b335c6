"""The API's routes, one router per concern; ``api.app.create_app`` includes them all.

A new kind of job is one more route here (its request model declared in ``tasks``): it takes an
``Owner`` (authentication) and ``Svc`` (the collaborators), reads its body with
``api.body.read_json_object`` and wraps every Redis call in ``api.services.guard``.
"""
