"""Druid's names of the runner configuration: the property names, the values some of them accept, Druid's
defaults, and the runner properties of other runners that an Overlord's file may hold."""

from __future__ import annotations

from typing import Literal

RUNNER_PREFIX = "druid.indexer.runner."
POD_TEMPLATE_PREFIX = RUNNER_PREFIX + "k8s.podTemplate."
SINGLE_CONTAINER_ADAPTER = "overlordSingleContainer"
MULTI_CONTAINER_ADAPTER = "overlordMultiContainer"
CUSTOM_TEMPLATE_ADAPTER = "customTemplateAdapter"
ADAPTER_TYPES = (SINGLE_CONTAINER_ADAPTER, MULTI_CONTAINER_ADAPTER, CUSTOM_TEMPLATE_ADAPTER)
SIDECAR_TERMINATIONS = ("kubexit", "native")
DEFAULT_KUBEXIT_IMAGE = "karlkfi/kubexit:v0.3.2"
DEFAULT_BASE_TASK_DIR = "/tmp/persistent/task"
DEEP_STORAGE_INTERMEDIARY = "deepstore"

SidecarTermination = Literal["kubexit", "native"]

# Runner properties that belong to Druid's other task runners (remote/httpRemote on the Overlord, the forking
# runner on MiddleManagers) or that configure the Overlord side of the Kubernetes runner. An Overlord
# runtime.properties may legitimately hold them; they do not change the Jobs, so they are accepted and
# ignored. Anything else under druid.indexer.runner.* that we do not know is a typo and refused.
OTHER_RUNNER_PROPERTIES = frozenset(
    RUNNER_PREFIX + name
    for name in (
        "type",
        "taskAssignmentTimeout",
        "taskCleanupTimeout",
        "taskShutdownLinkTimeout",
        "minWorkerVersion",
        "compressZnodes",
        "maxZnodeBytes",
        "pendingTasksRunnerNumThreads",
        "maxRetriesBeforeBlacklist",
        "workerBlackListBackoffTime",
        "workerBlackListCleanupPeriod",
        "maxPercentageBlacklistWorkers",
        "allowedPrefixes",
        "classpath",
        "javaCommand",
        "startPort",
        "endPort",
        "ports",
        # Kubernetes runner settings of the Overlord's own client and bookkeeping, not of the Jobs.
        "taskJoinTimeout",
        "logSaveTimeout",
        "enableKubernetesClientSharedInformers",
        "kubernetesClientInformerResyncPeriod",
    )
)
# Druid's hybrid runner (``type=k8sAndWorker``) keeps its settings under this prefix.
OTHER_RUNNER_PREFIXES = (RUNNER_PREFIX + "k8sAndWorker.",)
JAVA_OPTS_PROPERTY = RUNNER_PREFIX + "javaOpts"
BASE_TASK_DIR_PROPERTY = "druid.indexer.task.baseTaskDir"
ENABLE_TLS_PORT_PROPERTY = "druid.enableTlsPort"
INTERMEDIARY_STORAGE_PROPERTY = "druid.processing.intermediaryData.storage.type"
LAUNCH_TIMEOUT_ALIASES = (RUNNER_PREFIX + "K8sjobLaunchTimeout", RUNNER_PREFIX + "k8sjobLaunchTimeout")
