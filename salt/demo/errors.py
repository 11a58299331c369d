"""The error the demo-data generator raises for arguments a user can fix."""

from __future__ import annotations

from salt.errors import SaltError


class DemoDataError(SaltError, ValueError):
    """A bad argument of `write_demo_dataset` or ``salt-demo-data`` (a `SaltError`).

    Also a `ValueError`, as an invalid argument value is one for Python callers.
    """
