"""``cachehook serve``: a self-hosted Turborepo Remote Cache (v8) server with an events dashboard.

Optional: it needs the ``server`` extra (``pip install 'cachehook[server]'``, i.e. uvicorn and
httptools).
``import cachehook`` never imports this package. The pieces:

- ``app``: the ASGI application (routes, credentials, streaming uploads and downloads);
- ``tokens``: the bearer tokens file (scopes and teams per token);
- ``storage``: the storage interface, and artifacts by team in the project's ``LocalStore``;
- ``s3``: artifacts in an S3-compatible object store several servers share (the ``s3``
  extra, boto3);
- ``eventlog``: the cache events in SQLite or PostgreSQL, and the stats the dashboard shows;
- ``_database``: the SQL both engines run (the ``postgres`` extra, psycopg 3, for PostgreSQL);
- ``guard``: connection limits on uvicorn's protocol (header and body timeouts, 431, caps);
- ``dashboard``: the HTML page at ``/``; ``chart``: its SVG chart; ``tasknames``: the task an
  uploaded cachehook artifact names;
- ``validation``: the patterns and schemas every request is checked against.
"""

from __future__ import annotations

from cachehook.server.app import CacheServer, ServerConfig, app_from_environment

__all__ = ["CacheServer", "ServerConfig", "app_from_environment"]
