"""The public surface is small and pinned: changing it is a deliberate act."""

import dagrun


def test_public_names_are_pinned_and_sorted():
    assert dagrun.__all__ == sorted(dagrun.__all__)
    assert dagrun.__all__ == [
        "Flow",
        "Secret",
        "State",
        "StateType",
        "Task",
        "TaskFuture",
        "allow_failure",
        "exponential_backoff",
        "flow",
        "get_run_logger",
        "task",
        "unmapped",
    ]
    for name in dagrun.__all__:
        assert hasattr(dagrun, name)
