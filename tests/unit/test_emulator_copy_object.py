"""The emulator's copy of an API object: equal to the original, sharing nothing with it."""

from __future__ import annotations

import copy
from typing import Any

from druid_k8s_provider.testing.resources import copy_object


def test_a_copy_is_equal_and_independent_of_the_object() -> None:
    original: dict[str, Any] = {
        "metadata": {
            "name": "p",
            "labels": {"a": "b"},
            "ownerReferences": [{"uid": "u", "controller": True}],
        },
        "spec": {"containers": [{"name": "main", "args": ["x", 1, 2.5, None]}], "tuple": (1, [2])},
    }
    copied = copy_object(original)
    assert copied == original == copy.deepcopy(original)
    copied["metadata"]["labels"]["a"] = "changed"
    copied["metadata"]["ownerReferences"][0]["controller"] = False
    copied["spec"]["containers"][0]["args"].append("more")
    copied["spec"]["tuple"][1].append(3)
    assert original["metadata"]["labels"] == {"a": "b"}
    assert original["metadata"]["ownerReferences"] == [{"uid": "u", "controller": True}]
    assert original["spec"]["containers"][0]["args"] == ["x", 1, 2.5, None]
    assert original["spec"]["tuple"] == (1, [2])
