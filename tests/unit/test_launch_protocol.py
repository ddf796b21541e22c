"""Launch decisions without I/O: the launch mode from the Overlord's version, ids per attempt, retries."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.launch_protocol import (
    AfterFailedSubmit,
    AttemptAction,
    FoundJobStep,
    TaskIdentity,
    after_failed_submit,
    check_launch_mode,
    choose_launch_mode,
    decide_attempt,
    first_try_decision,
    found_job_step,
    parse_druid_version,
    runner_mismatch,
    submit_refused,
    written_id_failed,
)
from druid_k8s_provider.task import (
    MAX_DERIVED_ID_LENGTH,
    DruidTask,
    attempt_number,
    attempt_task_id,
    derive_task_id,
)

BASE = derive_task_id("etl", "load_wiki", "scheduled__2024-01-01T00:00:00+00:00", -1, "index_parallel")
DERIVED = TaskIdentity(BASE, user_written=False)


@pytest.mark.parametrize(
    ("version", "parsed"),
    [
        ("35.0.0", (35, 0, 0)),
        (" 34.1.12 ", (34, 1, 12)),
        (None, None),
        ("35.0.0-SNAPSHOT", None),
        ("35.0.0-imply", None),
        ("2024.10.1-iap", None),
        ("35.0", None),
        (35, None),
    ],
)
def test_only_a_plain_version_is_parsed(version: object, parsed: tuple[int, int, int] | None) -> None:
    assert parse_druid_version(version) == parsed


@pytest.mark.parametrize(
    ("version", "mode"),
    [
        ("35.0.0", "airflow"),
        ("36.1.2", "airflow"),
        ("34.0.0", "overlord"),
        (None, "overlord"),
        ("35.0.0-SNAPSHOT", "overlord"),
    ],
)
def test_auto_chooses_airflow_only_from_35_and_says_why(version: object, mode: str) -> None:
    choice = choose_launch_mode("auto", version)
    assert choice.mode == mode
    assert str(version) in choice.reason


def test_overlord_mode_is_taken_whatever_the_version() -> None:
    assert choose_launch_mode("overlord", "36.0.0").mode == "overlord"
    assert choose_launch_mode("overlord", None).mode == "overlord"


@pytest.mark.parametrize("version", ["34.0.0", None, "35.0.0-SNAPSHOT"])
def test_airflow_mode_below_35_is_refused_naming_the_version_and_the_fix(version: object) -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        choose_launch_mode("airflow", version)
    assert raised.value.field == "launch_mode"
    assert str(version) in raised.value.problem
    assert "launch_mode='overlord'" in raised.value.fix and "35.0.0" in raised.value.fix


def test_airflow_mode_from_35_is_taken() -> None:
    assert choose_launch_mode("airflow", "35.0.0").mode == "airflow"


OURS = {
    "druid.indexer.runner.k8sTaskPodNamePrefix": None,
    "druid.indexer.runner.namespace": "druid",
    "druid.indexer.runner.k8s.adapter.type": "overlordSingleContainer",
}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({}, {}),
        (
            {"druid.indexer.runner.k8sTaskPodNamePrefix": "Ingest-Jobs"},
            {"k8sTaskPodNamePrefix": "ingestjobs"},
        ),
        ({"druid.indexer.runner.k8sTaskPodNamePrefix": ""}, {}),
        ({}, {"k8s.adapter.type": "overlordSingleContainer"}),
        ({"druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter"}, {}),  # theirs not listed
    ],
)
def test_runner_settings_that_give_the_same_job_names_match(
    ours: dict[str, str | None], theirs: dict[str, str]
) -> None:
    listed = {"druid.indexer.runner.namespace": "druid"}
    listed |= {f"druid.indexer.runner.{name}": value for name, value in theirs.items()}
    assert runner_mismatch({**OURS, **ours}, listed) is None


@pytest.mark.parametrize(
    ("theirs", "prop", "their_value"),
    [
        ({"k8sTaskPodNamePrefix": "theirs"}, "druid.indexer.runner.k8sTaskPodNamePrefix", "theirs"),
        ({"namespace": "ingest"}, "druid.indexer.runner.namespace", "ingest"),
        (
            {"k8s.adapter.type": "customTemplateAdapter"},
            "druid.indexer.runner.k8s.adapter.type",
            "customTemplateAdapter",
        ),
    ],
)
def test_a_runner_setting_that_differs_names_the_property_and_both_values(
    theirs: dict[str, str], prop: str, their_value: str
) -> None:
    listed = {"druid.indexer.runner.namespace": "druid"}
    listed |= {f"druid.indexer.runner.{name}": value for name, value in theirs.items()}
    mismatch = runner_mismatch(OURS, listed)
    assert mismatch is not None
    assert (mismatch.property, mismatch.theirs) == (prop, their_value)
    assert mismatch.ours == OURS[prop]


PREFIX_MISMATCH = runner_mismatch(
    OURS, {"druid.indexer.runner.namespace": "druid", "druid.indexer.runner.k8sTaskPodNamePrefix": "theirs"}
)


def test_auto_with_a_prefix_that_differs_lets_the_overlord_create_the_job_and_says_why() -> None:
    choice = choose_launch_mode("auto", "35.0.0", PREFIX_MISMATCH)
    assert choice.mode == "overlord"
    assert "k8sTaskPodNamePrefix is 'theirs' and ours is unset" in choice.reason


def test_airflow_mode_with_a_prefix_that_differs_is_refused_naming_the_property_values_and_fix() -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        choose_launch_mode("airflow", "38.0.0", PREFIX_MISMATCH)
    assert raised.value.field == "druid.indexer.runner.k8sTaskPodNamePrefix"
    assert "'theirs'" in raised.value.problem and "unset" in raised.value.problem
    assert "set druid.indexer.runner.k8sTaskPodNamePrefix to 'theirs'" in raised.value.fix


def test_the_version_refusal_comes_before_a_runner_setting_and_overlord_mode_ignores_both() -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        choose_launch_mode("airflow", "34.0.0", PREFIX_MISMATCH)
    assert raised.value.field == "launch_mode"
    assert choose_launch_mode("overlord", "38.0.0", PREFIX_MISMATCH).mode == "overlord"
    assert "below 35.0.0" in choose_launch_mode("auto", "34.0.0", PREFIX_MISMATCH).reason


def test_an_unknown_launch_mode_is_refused() -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        choose_launch_mode("kubernetes", "35.0.0")
    assert raised.value.field == "launch_mode" and "'auto'" in raised.value.fix


@pytest.mark.parametrize(
    ("value", "shown"),
    [(["airflow"], "of type list"), (35, "of type int"), (None, "of type NoneType"), ("AUTO", "'AUTO'")],
)
def test_a_launch_mode_of_another_value_or_type_is_refused_naming_where_it_came_from(
    value: object, shown: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        check_launch_mode(value, "[druid_k8s] launch_mode")
    assert raised.value.field == "[druid_k8s] launch_mode" and shown in raised.value.problem
    assert check_launch_mode("overlord") == "overlord"


# -- ids per attempt ---------------------------------------------------------------------------------------


def test_attempt_ids_read_as_the_base_and_the_attempt() -> None:
    assert attempt_task_id(BASE, 1) == f"{BASE}_attempt1"
    assert attempt_task_id(BASE, 12) == f"{BASE}_attempt12"
    with pytest.raises(ValueError, match="start at 1"):
        attempt_task_id(BASE, 0)


def test_attempt_number_recognises_only_attempts_of_the_base() -> None:
    assert attempt_number(BASE, f"{BASE}_attempt3") == 3
    assert attempt_number(BASE, BASE) is None
    assert attempt_number(BASE, f"{BASE}_attempt03") is None
    assert attempt_number(BASE, f"{BASE}_attempt3x") is None
    assert attempt_number(BASE, "user_written_id") is None


def test_long_airflow_names_are_shortened_not_the_hash() -> None:
    long = derive_task_id("d" * 250, "t" * 250, "run", 123456, "index_parallel")
    assert len(long) <= MAX_DERIVED_ID_LENGTH - len("_attempt") - 25
    other_run = derive_task_id("d" * 250, "t" * 250, "run2", 123456, "index_parallel")
    assert long != other_run and long[:-16] == other_run[:-16]


names = st.text(min_size=1, max_size=300)


@given(
    dag_id=names,
    task_id=names,
    run_id=st.text(max_size=300),
    map_index=st.integers(min_value=-1, max_value=10**9),
    task_type=st.text(min_size=1, max_size=80),
    attempt=st.integers(min_value=1, max_value=10**12),
)
def test_attempt_ids_are_valid_bounded_deterministic_and_distinct(
    dag_id: str, task_id: str, run_id: str, map_index: int, task_type: str, attempt: int
) -> None:
    base = derive_task_id(dag_id, task_id, run_id, map_index, task_type)
    derived = attempt_task_id(base, attempt)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", derived)
    assert len(derived) <= MAX_DERIVED_ID_LENGTH
    assert derived == attempt_task_id(derive_task_id(dag_id, task_id, run_id, map_index, task_type), attempt)
    assert derived != attempt_task_id(base, attempt + 1)
    assert attempt_number(base, derived) == attempt
    assert DruidTask.from_spec({"type": "index_parallel"}, default_id=derived).id == derived


@given(
    first=st.tuples(names, names, st.text(max_size=50), st.integers(-1, 100)),
    second=st.tuples(names, names, st.text(max_size=50), st.integers(-1, 100)),
    attempts=st.tuples(st.integers(1, 50), st.integers(1, 50)),
)
def test_attempts_of_different_task_instances_never_share_an_id(
    first: tuple[str, str, str, int], second: tuple[str, str, str, int], attempts: tuple[int, int]
) -> None:
    assume(first != second)
    one = attempt_task_id(derive_task_id(*first, "index_parallel"), attempts[0])
    other = attempt_task_id(derive_task_id(*second, "index_parallel"), attempts[1])
    assert one != other


# -- the retry decision ------------------------------------------------------------------------------------


def attempt(n: int) -> str:
    return attempt_task_id(BASE, n)


def test_the_first_try_asks_about_attempt_one_and_submits_it() -> None:
    assert DERIVED.candidate_ids(1) == [attempt(1)]
    decision = decide_attempt(DERIVED, 1, {})
    assert (decision.action, decision.task_id, decision.attempt) == (AttemptAction.SUBMIT, attempt(1), 1)


def test_the_first_try_of_a_derived_id_submits_attempt_one_without_asking() -> None:
    # Airflow numbers each try it schedules anew, so before try 2 only this try can have submitted attempt
    # 1 (run a second time, it is answered entryAlreadyExists and re-attaches).
    decision = first_try_decision(DERIVED, 1)
    assert decision is not None
    assert (decision.action, decision.task_id, decision.attempt) == (AttemptAction.SUBMIT, attempt(1), 1)
    asked = decide_attempt(DERIVED, 1, {})  # what asking would decide when the Overlord knows nothing
    assert (asked.action, asked.task_id, asked.attempt) == (
        decision.action,
        decision.task_id,
        decision.attempt,
    )


def test_a_retry_or_a_written_id_is_asked_about() -> None:
    # A retry's earlier attempts decide; a written id may have been submitted by another DAG run.
    assert first_try_decision(DERIVED, 2) is None
    assert first_try_decision(TaskIdentity("nightly_wiki", user_written=True), 1) is None


def test_a_retry_asks_about_every_earlier_attempt_in_one_batch() -> None:
    assert DERIVED.candidate_ids(3) == [attempt(1), attempt(2), attempt(3)]


def test_a_retry_re_attaches_to_the_latest_attempt_still_active() -> None:
    # A worker crash after submitting attempt 2: the next try follows it instead of running a second task.
    decision = decide_attempt(DERIVED, 3, {attempt(1): "FAILED", attempt(2): "RUNNING"})
    assert (decision.action, decision.task_id, decision.attempt) == (AttemptAction.REATTACH, attempt(2), 2)
    assert "RUNNING" in decision.reason


def test_a_retry_after_success_reports_it_and_runs_nothing() -> None:
    decision = decide_attempt(DERIVED, 2, {attempt(1): "SUCCESS"})
    assert (decision.action, decision.task_id) == (AttemptAction.REPORT, attempt(1))


def test_a_retry_after_a_failure_really_runs_the_task_again_under_the_next_id() -> None:
    decision = decide_attempt(DERIVED, 2, {attempt(1): "FAILED"})
    assert (decision.action, decision.task_id, decision.attempt) == (AttemptAction.SUBMIT, attempt(2), 2)
    assert "FAILED" in decision.reason


def test_an_attempt_lost_before_its_submission_is_the_one_submitted_next() -> None:
    # Try 2 crashed between creating attempt 2's (suspended) Job and submitting it: try 3 submits attempt 2,
    # whose Job may still be waiting, rather than attempt 3.
    decision = decide_attempt(DERIVED, 3, {attempt(1): "FAILED"})
    assert (decision.action, decision.task_id) == (AttemptAction.SUBMIT, attempt(2))


def test_an_unknown_state_counts_as_active_so_nothing_runs_twice() -> None:
    decision = decide_attempt(DERIVED, 2, {attempt(1): "PAUSED"})
    assert decision.action is AttemptAction.REATTACH


@given(
    states=st.lists(st.sampled_from(["RUNNING", "SUCCESS", "FAILED", None]), min_size=1, max_size=6),
)
def test_a_new_attempt_is_submitted_only_when_the_latest_known_one_failed_or_none_is_known(
    states: list[str | None],
) -> None:
    statuses = {attempt(n): state for n, state in enumerate(states, start=1) if state is not None}
    decision = decide_attempt(DERIVED, len(states), statuses)
    known = [state for state in states if state is not None]
    if decision.action is AttemptAction.SUBMIT:
        assert not known or known[-1] == "FAILED"
        assert decision.task_id not in statuses
    else:
        assert decision.task_id in statuses and statuses[decision.task_id] == known[-1]


def test_a_user_written_id_is_never_changed() -> None:
    mine = TaskIdentity("nightly_wiki_2024-01-01", user_written=True)
    assert mine.candidate_ids(5) == ["nightly_wiki_2024-01-01"]
    assert decide_attempt(mine, 5, {}).task_id == "nightly_wiki_2024-01-01"
    assert decide_attempt(mine, 5, {}).action is AttemptAction.SUBMIT
    assert decide_attempt(mine, 5, {"nightly_wiki_2024-01-01": "RUNNING"}).action is AttemptAction.REATTACH
    assert decide_attempt(mine, 5, {"nightly_wiki_2024-01-01": "SUCCESS"}).action is AttemptAction.REPORT


def test_a_retry_after_a_user_written_id_failed_is_refused_saying_how_to_template_it() -> None:
    mine = TaskIdentity("nightly_wiki", user_written=True)
    decision = decide_attempt(mine, 2, {"nightly_wiki": "FAILED"})
    assert (decision.action, decision.task_id) == (AttemptAction.REFUSE, "nightly_wiki")
    refusal = written_id_failed(decision.task_id)
    assert refusal.field == "task.id"
    assert "nightly_wiki" in refusal.problem and "FAILED" in refusal.problem
    assert "{{ ti.try_number }}" in refusal.fix and "leave 'id' out" in refusal.fix


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        (400, True),
        (401, True),
        (403, True),
        (404, True),
        (408, False),
        (429, False),
        (500, False),
        (503, False),
        (307, False),
        (None, False),
    ],
)
def test_only_a_4xx_answer_refuses_a_submission_for_good(status: int | None, refused: bool) -> None:
    assert submit_refused(status) is refused


@pytest.mark.parametrize(
    ("refused", "knows", "step"),
    [
        # The Overlord has the task after all (a lost answer): its runner may join the Job, follow it.
        (False, True, AfterFailedSubmit.REATTACH),
        (True, True, AfterFailedSubmit.REATTACH),
        # It does not have it: nothing would ever run the Job.
        (False, False, AfterFailedSubmit.DELETE_JOB),
        (True, False, AfterFailedSubmit.DELETE_JOB),
        # Refused (e.g. 401 with a wrong password, which also refuses the question): never stored.
        (True, None, AfterFailedSubmit.DELETE_JOB),
        # No answer and no way to ask: the request may have reached it; keep the Job for the retry.
        (False, None, AfterFailedSubmit.KEEP_JOB),
    ],
)
def test_a_failed_submission_deletes_the_suspended_job_only_when_the_overlord_cannot_have_the_task(
    refused: bool, knows: bool | None, step: AfterFailedSubmit
) -> None:
    assert after_failed_submit(refused=refused, overlord_knows=knows) is step


@pytest.mark.parametrize(
    ("same", "knows", "deletable", "step"),
    [
        (True, False, True, FoundJobStep.JOIN),
        (True, True, False, FoundJobStep.JOIN),
        (False, True, True, FoundJobStep.FOLLOW_OVERLORD),
        (False, True, False, FoundJobStep.FOLLOW_OVERLORD),
        (False, False, True, FoundJobStep.REPLACE),
        (False, False, False, FoundJobStep.REFUSE),
    ],
)
def test_a_found_job_of_another_task_json_is_replaced_only_while_no_overlord_knows_the_task(
    same: bool, knows: bool, deletable: bool, step: FoundJobStep
) -> None:
    assert found_job_step(same_task=same, overlord_knows=knows, deletable=deletable) is step
