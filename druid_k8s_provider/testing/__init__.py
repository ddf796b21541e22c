"""An in-process Kubernetes API emulator, so the provider (and users' DAGs) can be tested without a cluster.

``KubeEmulator`` serves the real Kubernetes REST API over HTTP on loopback; the official clients, the cncf
provider's hooks and kubectl work against it unmodified. ``OverlordEmulator`` is a stand-in Druid Overlord
beside it: Druid's task API, lockbox and Kubernetes runner, refusing what a real Overlord refuses.
"""

from druid_k8s_provider.testing.api_errors import ApiError
from druid_k8s_provider.testing.emulator import KubeEmulator
from druid_k8s_provider.testing.overlord.emulator import OverlordEmulator
from druid_k8s_provider.testing.store import ObjectStore

__all__ = ["ApiError", "KubeEmulator", "ObjectStore", "OverlordEmulator"]
