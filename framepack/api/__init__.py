"""REST API faces: `register_routes(add_api_route, host, queue)` mounts it under /framepack/v1.

The same registration serves SD.Next (`shared.api.add_api_route`, under the host's auth) and
the standalone app (`framepack.app.create_app`). See framepack/api/routes.py for the endpoints
and framepack/api/validation.py for how bodies become the shared request model.
"""

from framepack.api.routes import API_PREFIX, DEFAULT_MAX_BODY, register_routes

__all__ = ["API_PREFIX", "DEFAULT_MAX_BODY", "register_routes"]
