from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from airflow.triggers.base import BaseTrigger

import druid_k8s_provider
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook, DruidOverlordHook


def test_provider_entry_point_resolves_to_provider_info() -> None:
    providers = entry_points(group="apache_airflow_provider")
    found = [ep for ep in providers if ep.value.startswith("druid_k8s_provider")]
    assert len(found) == 1
    info = found[0].load()()
    assert info["package-name"] == "druid-k8s-provider"
    assert info["versions"] == [druid_k8s_provider.__version__]
    assert "druid_k8s" in info["config"]


def test_the_overlord_hook_is_registered_with_the_druid_providers_connection_names() -> None:
    info = druid_k8s_provider.get_provider_info()
    modules = [module for entry in info["hooks"] for module in entry["python-modules"]]
    assert "druid_k8s_provider.hooks.overlord" in modules
    expected = ("druid_ingest_conn_id", "druid_ingest_default")
    for hook in (DruidOverlordHook, DruidOverlordAsyncHook):
        assert (hook.conn_name_attr, hook.default_conn_name) == expected


def test_every_trigger_module_is_registered() -> None:
    """Airflow lists a provider's triggers from get_provider_info: the operator's trigger included."""
    info = druid_k8s_provider.get_provider_info()
    registered = {module for entry in info["triggers"] for module in entry["python-modules"]}
    package = Path(druid_k8s_provider.__file__).parent / "triggers"
    defining = set()
    for path in sorted(package.glob("*.py")):
        module = importlib.import_module(f"druid_k8s_provider.triggers.{path.stem}")
        classes = vars(module).values()
        if any(
            isinstance(value, type) and issubclass(value, BaseTrigger) and value.__module__ == module.__name__
            for value in classes
        ):
            defining.add(module.__name__)
    assert "druid_k8s_provider.triggers.overlord_task" in defining
    assert registered == defining
