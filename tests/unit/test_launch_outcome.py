"""The outcome the Overlord's terminal status gives, as the user reads it in the Airflow error."""

from __future__ import annotations

from druid_k8s_provider.launch.outcome import DRUID_SHUTDOWN_MESSAGE, overlord_outcome


def test_druids_shutdown_message_does_not_blame_a_user_for_the_providers_own_shutdown() -> None:
    """A try that reports a shutdown it did not see (its trigger was replaced after the provider shut a
    launch that could not succeed down) says who else may have sent it."""
    outcome = overlord_outcome({"status_code": "FAILED", "error_msg": DRUID_SHUTDOWN_MESSAGE}, None, None)
    assert outcome.status == "FAILED" and outcome.error is not None
    assert outcome.error.startswith(DRUID_SHUTDOWN_MESSAGE)
    assert "the provider's own shutdown of a launch that could not succeed" in outcome.error


def test_other_druid_messages_are_reported_as_they_are() -> None:
    status = {
        "status_code": "FAILED",
        "error_msg": "Peon did not report status successfully.",
        "duration_ms": 5,
    }
    outcome = overlord_outcome(status, None, None)
    assert (outcome.error, outcome.duration_ms) == ("Peon did not report status successfully.", 5)
    assert overlord_outcome({"status_code": "SUCCESS"}, None, None).error is None
