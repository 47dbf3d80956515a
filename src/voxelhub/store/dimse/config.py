"""How the DIMSE service presents itself: its AE title, address, archive and peers.

>>> DimseConfig(archive="scanner", remote_aes={"VIEWER": ("10.0.0.5", 104)}).ae_title
'VOXELHUB'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from voxelhub.core.settings import Settings
from voxelhub.store.dimse.errors import DimseConfigError

MAX_AE_TITLE_LENGTH = 16
MAX_PORT = 65535


def check_ae_title(title: str, *, what: str = "AE title") -> str:
    """The title as given, or an error naming what PS3.5 allows (AE VR: 1-16 chars, no '\\')."""
    stripped = title.strip()
    if not stripped:
        raise DimseConfigError(f"the {what} is empty; give 1 to 16 characters, e.g. VOXELHUB")
    if len(stripped) > MAX_AE_TITLE_LENGTH:
        raise DimseConfigError(
            f"the {what} {title!r} has {len(stripped)} characters; an AE title holds at most "
            f"{MAX_AE_TITLE_LENGTH}"
        )
    if "\\" in stripped or not stripped.isascii() or not stripped.isprintable():
        raise DimseConfigError(
            f"the {what} {title!r} may only hold printable ASCII characters without a backslash"
        )
    return stripped


def _check_port(port: int, what: str, *, lowest: int) -> None:
    if not lowest <= port <= MAX_PORT:
        raise DimseConfigError(f"the {what} port {port} is not between {lowest} and {MAX_PORT}")


@dataclass(frozen=True, kw_only=True)
class DimseConfig:
    """Settings of the DIMSE service.

    `archive` is the name of the archive C-STORE stores into and C-FIND/C-GET/C-MOVE read
    from. `remote_aes` maps the AE titles that C-MOVE may send to onto (host, port).
    Port 0 picks a free port (see `DimseServer.port`). A peer that sends nothing for
    `idle_timeout_s` is aborted, so a modality that hangs does not hold an association.
    With `commitment_same_association`, a storage commitment report goes first on the
    requesting association while that is still open (PS3.4 J.3.3.1.2 allows it; a modality
    that waits there for it needs it), and otherwise on a new one to `remote_aes`.
    With `check_called_ae`, an association whose Called AE Title is not `ae_title` is
    rejected (rejected-permanent, service-user, called AE title not recognised).
    """

    archive: str
    ae_title: str = "VOXELHUB"
    port: int = 11112
    host: str = "127.0.0.1"
    remote_aes: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    idle_timeout_s: float = 60.0
    commitment_same_association: bool = False
    check_called_ae: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        if not self.archive.strip():
            raise DimseConfigError(
                "name the archive that C-STORE stores into (DimseConfig.archive or "
                "VOXELHUB_DEFAULT_ARCHIVE)"
            )
        _check_port(self.port, "DIMSE listening", lowest=0)
        if not self.idle_timeout_s > 0:
            raise DimseConfigError(
                f"the DIMSE idle timeout must be a positive number of seconds, not "
                f"{self.idle_timeout_s}"
            )
        remotes: dict[str, tuple[str, int]] = {}
        for title, (host, port) in self.remote_aes.items():
            checked = check_ae_title(title, what="remote AE title")
            if not host:
                raise DimseConfigError(f"the remote AE {checked} has no host; give (host, port)")
            _check_port(port, f"remote AE {checked}", lowest=1)
            remotes[checked] = (host, int(port))
        object.__setattr__(self, "remote_aes", MappingProxyType(remotes))

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> DimseConfig:
        """The configuration storing into the deployment's default archive."""
        if not settings.default_archive:
            raise DimseConfigError(
                "the DIMSE service stores into the default archive: set "
                "VOXELHUB_DEFAULT_ARCHIVE to the name of an archive"
            )
        return cls(archive=settings.default_archive, **options)
