from __future__ import annotations

from importlib.metadata import entry_points

import druid_k8s_provider


def test_provider_entry_point_resolves_to_provider_info() -> None:
    providers = entry_points(group="apache_airflow_provider")
    found = [ep for ep in providers if ep.value.startswith("druid_k8s_provider")]
    assert len(found) == 1
    info = found[0].load()()
    assert info["package-name"] == "druid-k8s-provider"
    assert info["versions"] == [druid_k8s_provider.__version__]
    assert "druid_k8s" in info["config"]
