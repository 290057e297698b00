"""Fake `modules.api.api.Api`: `add_api_route` adds the host's HTTP basic auth when credentials are set."""

from __future__ import annotations

import secrets

from modules import shared


class Api:
    def __init__(self, app, credentials: dict[str, str] | None = None):
        self.app = app
        self.credentials = dict(credentials or {})
        self.fake_routes: list[dict] = []  # test-only

    def auth(self, credentials=None):  # replaced by a FastAPI dependency in add_api_route
        return True

    def _auth_dependency(self):
        from fastapi import Depends, HTTPException
        from fastapi.security import HTTPBasic, HTTPBasicCredentials

        def auth(credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
            expected = self.credentials.get(credentials.username)
            if expected is not None and secrets.compare_digest(credentials.password, expected):
                return True
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})

        return Depends(auth)

    def add_api_route(self, path: str, fn, auth: bool = True, **kwargs):
        self.fake_routes.append({"path": path, "endpoint": fn, "auth": auth, **kwargs})
        if auth and self.credentials:
            deps = list(kwargs.get("dependencies", []))
            deps.append(self._auth_dependency())
            kwargs["dependencies"] = deps
        if shared.opts.subpath:
            self.app.add_api_route(f"{shared.opts.subpath}{path}", endpoint=fn, **kwargs)
        self.app.add_api_route(path, endpoint=fn, **kwargs)
