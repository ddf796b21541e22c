"""A stand-in Druid Overlord (task queue, lockbox, Kubernetes runner) for tests; see :mod:`.emulator`.

``OverlordEmulator`` is imported lazily: the stand-in peon uses :mod:`.lockbox` and is itself imported by
the emulator.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OverlordEmulator"]


def __getattr__(name: str) -> Any:
    if name == "OverlordEmulator":
        from druid_k8s_provider.testing.overlord.emulator import OverlordEmulator

        return OverlordEmulator
    raise AttributeError(name)
