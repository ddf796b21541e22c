"""Which Druid release the peon runs, and what of its Job depends on it.

Druid's Kubernetes task runner changed the Job it builds between releases, and a peon image only starts from
the Job its own release would build. The differences from Druid 30.0.0 on, read in Druid's adapters
(``K8sTaskAdapter``, ``PodTemplateTaskAdapter``) and ``distribution/docker/peon.sh``:

- 31.0.0 (apache/druid PR 17027): the peon command gets ``--loadBroadcastDatasourceMode <mode>`` and a pod
  template's main container the env ``LOAD_BROADCAST_DATASOURCE_MODE``; (PR 16772) the Job and the pod of a
  pod template get the annotation ``task.jobTemplate`` naming the template used.
- 33.0.0 (PR 17749): ``druid.indexer.runner.k8sTaskPodNamePrefix`` replaces the task id part of Job names;
  (PRs 17738, 17898) ``PodTemplateTaskAdapter`` labels the Job and its pod ``druid.overlord.namespace`` with
  ``overlordNamespace`` (else the runner namespace), the label the Overlord's restore filters on when
  ``overlordNamespace`` is set.
- 34.0.0 (PR 18206): ``peon.sh`` passes the task directory and attempt ``1`` to the peon itself, so the
  overlord adapters' command loses ``<baseTaskDir> 1``, their ``TASK_DIR`` becomes the task's own
  directory (``<baseTaskDir>/<id>``) and their ``JAVA_OPTS`` gains
  ``-Ddruid.indexer.task.baseTaskDir=<baseTaskDir>``.

A version is given as plain ``X.Y.Z`` (the Overlord's ``/status`` reports it). No version means the newest
layout above, the one current Druid releases build.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from druid_k8s_provider.errors import DruidK8sConfigError

log = logging.getLogger(__name__)

Version = tuple[int, int, int]

OLDEST_SUPPORTED: Version = (30, 0, 0)
BROADCAST_DATASOURCE_MODE_SINCE: Version = (31, 0, 0)
JOB_TEMPLATE_ANNOTATION_SINCE: Version = (31, 0, 0)
POD_NAME_PREFIX_SINCE: Version = (33, 0, 0)
OVERLORD_NAMESPACE_LABEL_SINCE: Version = (33, 0, 0)
TASK_DIR_FROM_PEON_SCRIPT_SINCE: Version = (34, 0, 0)
#: The layout of a Druid whose version is unknown: the newest one above.
CURRENT: Version = TASK_DIR_FROM_PEON_SCRIPT_SINCE

_PLAIN_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_warned_versions: set[str] = set()


def parse_version(field: str, text: str) -> Version:
    """``"34.0.0"`` -> ``(34, 0, 0)``; anything but a plain ``X.Y.Z`` from 30.0.0 on is refused."""
    version = _plain(text)
    if version is None:
        raise DruidK8sConfigError(
            field,
            f"{text!r} is not a plain Druid release version",
            "give the version as X.Y.Z, e.g. 34.0.0, or leave it unset for the current release's Jobs",
        )
    _refuse_unsupported(field, version)
    return version


#: The field an error names for the version the Overlord reported: no setting of the user's holds it.
OVERLORD_VERSION_FIELD = "the Overlord's version (GET /status)"


def check_overlord_version(reported: str | None) -> str | None:
    """``reported`` (the ``version`` of the Overlord's ``GET /status``) when the provider can run tasks with
    that Overlord; a plain ``X.Y.Z`` before 30.0.0 is refused (:class:`DruidK8sConfigError` naming
    :data:`OVERLORD_VERSION_FIELD`, the fix: upgrade Druid). None, snapshot and vendor versions pass."""
    version = None if reported is None else _plain(reported)
    if version is not None:
        _refuse_unsupported(OVERLORD_VERSION_FIELD, version)
    return reported


def _plain(text: str) -> Version | None:
    match = _PLAIN_VERSION.fullmatch(text.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def _refuse_unsupported(field: str, version: Version) -> None:
    if version < OLDEST_SUPPORTED:
        raise DruidK8sConfigError(
            field,
            f"Druid {'.'.join(map(str, version))} is older than {'.'.join(map(str, OLDEST_SUPPORTED))}, the "
            "oldest release whose Jobs this provider builds",
            "upgrade Druid to 30.0.0 or later",
        )


@dataclass(frozen=True)
class DruidLayout:
    """The parts of a peon Job that depend on the Druid release; build it with :func:`layout_for`."""

    version: Version

    @property
    def broadcast_datasource_mode(self) -> bool:
        """``--loadBroadcastDatasourceMode`` and ``LOAD_BROADCAST_DATASOURCE_MODE`` (31.0.0+)."""
        return self.version >= BROADCAST_DATASOURCE_MODE_SINCE

    @property
    def job_template_annotation(self) -> bool:
        """The ``task.jobTemplate`` annotation of pod template Jobs (31.0.0+)."""
        return self.version >= JOB_TEMPLATE_ANNOTATION_SINCE

    @property
    def pod_name_prefix(self) -> bool:
        """Whether ``k8sTaskPodNamePrefix`` names the Jobs (33.0.0+); older releases ignore it."""
        return self.version >= POD_NAME_PREFIX_SINCE

    @property
    def overlord_namespace_label(self) -> bool:
        """The ``druid.overlord.namespace`` label of pod template Jobs (33.0.0+)."""
        return self.version >= OVERLORD_NAMESPACE_LABEL_SINCE

    @property
    def task_dir_from_peon_script(self) -> bool:
        """``/peon.sh`` without ``<baseTaskDir> 1``, a per-task ``TASK_DIR``, the baseTaskDir option (34+)."""
        return self.version >= TASK_DIR_FROM_PEON_SCRIPT_SINCE


def layout_for(druid_version: str | None, field: str = "druid_version") -> DruidLayout:
    """The layout of the Druid release ``druid_version`` (plain ``X.Y.Z``).

    ``None`` gives the current layout. So does a version that is not plain ``X.Y.Z`` (a snapshot or vendor
    build such as ``35.0.0-SNAPSHOT``), with a warning once per version: its Jobs are most likely the
    current ones. A plain version older than 30.0.0 is refused (:class:`DruidK8sConfigError` naming
    ``field``).
    """
    if druid_version is None:
        return DruidLayout(CURRENT)
    version = _plain(druid_version)
    if version is None:
        if druid_version not in _warned_versions:
            _warned_versions.add(druid_version)
            log.warning(
                "Druid version %r is not a plain X.Y.Z release; building Jobs as Druid %s and later do",
                druid_version,
                ".".join(map(str, CURRENT)),
            )
        return DruidLayout(CURRENT)
    _refuse_unsupported(field, version)
    return DruidLayout(version)
