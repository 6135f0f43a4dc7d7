"""gunicorn's access log, without the secret in a private calendar feed's address.

``--logger-class portal.accesslog.AccessLogger`` (deploy/run.py, the image's entrypoint):
gunicorn's own logger, with the feed token in /calendar/feed/<token>.ics replaced before
the line is formatted (portal.logformat does the same for Django's own log lines).
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from portal.logformat import _FEED_TOKEN


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "{raw_uri}e", "{path_info}e"):
            value = atoms.get(key)
            if isinstance(value, str) and "/calendar/feed/" in value:
                atoms[key] = _FEED_TOKEN.sub(r"\1[redacted]\2", value)
        return atoms
