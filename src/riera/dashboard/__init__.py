"""``riera dashboard``: live charts of streaming queries and their metrics, over the provenance
store, in its own process.

It listens on 127.0.0.1 by default. Any other address needs a token: given with ``--token`` or
generated and printed once; the browser trades it for a cookie (:mod:`riera.dashboard.security`).
Every asset ships inside the package, so it works offline. Pages read; nothing writes.
"""

from __future__ import annotations

import secrets
from typing import Any

from riera.dashboard.security import MIN_TOKEN, allowed_hosts, is_loopback, machine_names
from riera.errors import RieraError

__all__ = ["serve"]


def serve(host: str = "127.0.0.1", port: int = 8765, *, token: str | None = None,
          store: str | None = None, hz: float = 4.0, on_ready: Any = print) -> None:  # fmt: skip
    """Run the dashboard until interrupted (blocks)."""
    import uvicorn

    from riera.dashboard.app import create_app
    from riera.provenance import open_default_store
    from riera.provenance.store import open_store

    if not is_loopback(host) and token is None:
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < MIN_TOKEN:
        raise RieraError(f"--token needs {MIN_TOKEN} characters at least (got {len(token)}); "
                         f"leave it out and one is generated and printed")  # fmt: skip
    extra = machine_names() if host in ("0.0.0.0", "::") else ()
    opened = open_store(store) if store else open_default_store()
    app = create_app(opened, hosts=allowed_hosts(host, port, extra), token=token, hz=hz,
                     port=port)  # fmt: skip
    numeric = [n for n in extra if n.replace(".", "").isdigit()]  # an IPv4 address reaches it
    shown = (numeric or ["127.0.0.1"])[0] if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    # An event stream never ends by itself: on SIGTERM or Ctrl-C, uvicorn would wait for every
    # open tab to go away and keep sending it frames. A second is enough for the plain GETs.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    on_ready(f"riera dashboard: {url}")
    try:
        server.run()
    finally:
        opened.close()
