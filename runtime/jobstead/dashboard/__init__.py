"""The web dashboard (``pip install 'jobstead[dashboard]'``): see and steer every job, live.

``jobstead dashboard`` serves it on its own; ``create_dashboard`` gives the
ASGI app to mount in yours::

    from jobstead.dashboard import Credentials, create_dashboard
    app.mount("/jobs", create_dashboard(jobstead_app, auth=Credentials(token=...)))
"""

from __future__ import annotations

from .app import create_dashboard
from .auth import Credentials, CredentialsError, User, credentials_from

__all__ = ["Credentials", "CredentialsError", "User", "create_dashboard", "credentials_from"]
