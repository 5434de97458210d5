"""A tenant's credentials, and how an app key may be shown: the leaf every layer can import."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    """One tenant's app key and master secret; the secret never shows in a repr."""

    app_key: str
    master_secret: str = field(repr=False)

    @property
    def masked_key(self) -> str:
        """The app key as logs may show it."""
        return mask(self.app_key)


def mask(app_key: str) -> str:
    """First and last four characters of an app key, the rest hidden."""
    if len(app_key) <= 8:
        return "*" * len(app_key)
    return f"{app_key[:4]}…{app_key[-4:]}"
