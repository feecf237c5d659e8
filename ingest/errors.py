"""Exception hierarchy shared by every baqylau stage.

Every error the project raises subclasses :class:`BaqylauError` *and* the builtin that
matches its meaning (PyAV's ``InvalidDataError(FFmpegError, ValueError)`` pattern), so
callers can catch either ``BaqylauError`` or the ordinary builtin. The base lives in
``ingest`` because ingest is the bottom of the stage dependency graph: every other stage
already depends on its frame record.
"""

from __future__ import annotations


class BaqylauError(Exception):
    """Base of every exception raised by baqylau code."""


class ShapeError(BaqylauError, ValueError):
    """An array handed between stages has the wrong shape or dtype."""


class SourceError(BaqylauError, OSError):
    """A video source cannot be opened or read (missing file, refused connection, no video)."""


class SourceTimeoutError(SourceError, TimeoutError):
    """Opening or reading a video source did not finish within its deadline."""
