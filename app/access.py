"""Who may do what in the app: sign-ins from `--auth-file`, each an admin or a rater.

Admins do everything. Raters vote in the arena and nothing else: every other event of the app
(preparing battles, jobs, bench, sweep, evaluation, exports, loading a model by path, even the
pickers' refresh) is refused for them before it runs. The rule is enforced in one place,
`app.blocks.LabBlocks.process_api`, which every call of every event passes through (the page's
buttons, the named API and unnamed events called by number alike), and it allows by list, not by
exception: an event is open to raters only when it was made by the arena tab, so a new endpoint is
admin-only until someone says otherwise. This module imports no Gradio: the app reads the auth
file before Gradio is imported. Without an auth file there is no sign-in and whoever reaches the app
is an admin: serve it on 127.0.0.1, or pass `--auth-file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError

ROLES = ("admin", "rater")
REFUSED = "admins only: you are signed in as a rater, who may vote in the Arena and nothing else"


@dataclass(frozen=True)
class Access:
    """The sign-ins (user -> (password, role)), or none: then everyone is an admin."""

    users: dict[str, tuple[str, str]] | None = None

    @property
    def signed_in(self) -> bool:
        return self.users is not None

    def gradio_auth(self) -> list[tuple[str, str]] | None:
        """Gradio's `auth`: (user, password) pairs, or None for no sign-in."""
        return None if self.users is None else [(u, p) for u, (p, _) in self.users.items()]

    def role(self, user: str | None) -> str:
        """'admin' or 'rater'. Without sign-ins everyone is an admin; with them, a request that
        names no known user (none can reach an event without signing in) is a rater."""
        if self.users is None:
            return "admin"
        return self.users[user][1] if user in self.users else "rater"

    def is_admin(self, request) -> bool:
        return self.role(getattr(request, "username", None)) == "admin"


def read_auth_file(path: str) -> Access:
    """USER:PASSWORD:ROLE a line, ROLE `admin` or `rater` (the password may hold colons; blank lines
    and # comments are skipped). Each line's faults are named with its number."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--auth-file: cannot read {path!r} ({getattr(e, 'strerror', None) or e})") from None
    users: dict[str, tuple[str, str]] = {}
    where = Path(path).name
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, _, rest = (part.strip() for part in line.partition(":"))
        password, _, role = (part.strip() for part in rest.rpartition(":"))
        if not user or not password or role not in ROLES:
            raise UsageError(f"--auth-file: line {i} of {where} must be USER:PASSWORD:ROLE, "
                             f"ROLE one of {', '.join(ROLES)}")
        if user in users:
            raise UsageError(f"--auth-file: line {i} of {where} names {user!r} a second time")
        users[user] = (password, role)
    if not users:
        raise UsageError(f"--auth-file: {where} names no USER:PASSWORD:ROLE")
    return Access(users)
