"""The HTTP front end: app factory, routes, schemas, auth and error rendering."""
