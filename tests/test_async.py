"""`async def` tasks and flows (DESIGN section 2), on the in-process executor and on Dask:
an async flow's body runs, awaited task calls give values, gathered calls run concurrently,
and retries, timeouts, cache and logs work for async tasks as for sync ones."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dagrun import flow, get_run_logger, task
from dagrun.errors import TaskTimeoutError
from dagrun.states import StateType


def record(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{text}\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_calling_an_async_flow_returns_a_coroutine_that_runs_its_body(executor, tmp_path):
    ran = tmp_path / "ran.txt"

    @flow(executor=executor)
    async def greet(name: str):
        await asyncio.sleep(0)
        record(ran, f"body ran for {name}")
        return f"hello {name}"

    call = greet("ada")
    assert inspect.iscoroutine(call)
    assert asyncio.run(call) == "hello ada"
    assert lines(ran) == ["body ran for ada"]
    state = asyncio.run(greet("bob", return_state=True))
    assert state.type is StateType.COMPLETED and state.result() == "hello bob"


def test_awaiting_an_async_task_call_in_an_async_flow_gives_its_value(executor):
    @task
    async def double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    @task
    def increment(x):
        return x + 1

    @flow(executor=executor)
    async def pipeline():
        doubled = await double(4)
        future = double(doubled)  # an awaitable TaskFuture, passed on as a dependency
        bumped = increment(future)  # a sync task in an async flow: its future, as usual
        return await bumped, bumped.result(), await future

    assert asyncio.run(pipeline()) == (17, 17, 16)


def test_gathered_async_task_calls_run_concurrently(dask_executor, tmp_path):
    log = tmp_path / "calls.txt"

    @task
    async def nap(name):
        import os  # noqa: PLC0415 - where it ran, for the failure message

        record(log, f"start {name} pid={os.getpid()} t={time.time():.3f}")
        await asyncio.sleep(1)
        record(log, f"end {name} t={time.time():.3f}")
        return name

    @flow(executor=dask_executor)
    async def naps():
        started = time.monotonic()
        names = await asyncio.gather(nap("a"), nap("b"))
        return names, time.monotonic() - started

    names, elapsed = asyncio.run(naps())
    assert names == ["a", "b"]
    events = lines(log)
    kinds = [event.split()[0] + " " + event.split()[1] for event in events]
    assert sorted(kinds[:2]) == ["start a", "start b"], events  # both started before either ended
    assert elapsed < 1.95, f"two gathered 1 s tasks (2 s in a row) took {elapsed:.2f} s: {events}"


def test_an_async_task_called_outside_a_flow_is_a_coroutine_that_runs_it(tmp_path):
    log = tmp_path / "calls.txt"

    @task(retries=1)
    async def flaky(x):
        record(log, "attempt")
        if len(lines(log)) == 1:
            raise ConnectionError("first attempt fails")
        return x * 10

    call = flaky(3)
    assert inspect.iscoroutine(call)
    assert asyncio.run(call) == 30
    assert lines(log) == ["attempt", "attempt"]


def test_async_task_failure_is_retried_then_fails_the_flow_with_its_error(executor, tmp_path):
    log = tmp_path / "calls.txt"

    @task(retries=2)
    async def always_fails():
        record(log, "attempt")
        raise ValueError("async boom")

    @flow(executor=executor)
    async def pipeline():
        return await always_fails()

    state = asyncio.run(pipeline(return_state=True))
    assert state.type is StateType.FAILED
    assert isinstance(state.exception, ValueError) and "async boom" in str(state.exception)
    assert lines(log) == ["attempt"] * 3


def test_async_task_timeout_cancels_the_coroutine(executor, tmp_path):
    log = tmp_path / "calls.txt"

    @task(timeout_seconds=0.3)
    async def stuck():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record(log, "cancelled")
            raise

    @flow(executor=executor)
    async def pipeline():
        return await stuck()

    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="timeout_seconds=0.3"):
        asyncio.run(pipeline())
    assert time.monotonic() - started < 15
    assert lines(log) == ["cancelled"]  # the coroutine itself was stopped


def test_async_task_results_are_cached(executor, tmp_path):
    log = tmp_path / "calls.txt"

    @task(cache=True)
    async def expensive(x):
        record(log, f"computed {x}")
        return x * x

    @flow(executor=executor)
    async def pipeline():
        future = expensive(7)
        return await future, future.state.name

    assert asyncio.run(pipeline()) == (49, "Completed")
    assert asyncio.run(pipeline()) == (49, "Cached")
    assert lines(log) == ["computed 7"]


def test_async_task_logs_and_prints_reach_the_driver(executor, run_logs):
    @task(log_prints=True)
    async def chatty(x):
        get_run_logger().info("logged %s", x)
        print(f"printed {x}")
        return x

    @flow(name="async_logs", executor=executor)
    async def pipeline():
        return await chatty(5)

    assert asyncio.run(pipeline()) == 5
    messages = [(r.getMessage(), r.task_run_name) for r in run_logs]
    assert ("logged 5", "chatty-0") in messages
    assert ("printed 5", "chatty-0") in messages


def test_sync_and_async_mix_async_subflow_and_async_task_in_a_sync_flow(executor):
    @task
    async def triple(x):
        await asyncio.sleep(0)
        return 3 * x

    @flow
    async def inner(x):
        return await triple(x)

    @flow(executor=executor)
    async def outer():
        return await inner(2) + 1

    @flow(executor=executor)
    def sync_outer():
        return triple.submit(5).result() + triple(1).result()

    assert asyncio.run(outer()) == 7
    assert sync_outer() == 18


def test_a_sync_task_with_retries_called_outside_a_flow_retries_and_returns(tmp_path):
    log = tmp_path / "calls.txt"

    @task(retries=1)
    def flaky():
        record(log, "attempt")
        if len(lines(log)) == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    assert flaky() == "ok"
    assert lines(log) == ["attempt", "attempt"]


def test_ctrl_c_cancels_an_async_flow_run_with_asyncio_run(tmp_path):
    started = tmp_path / "started"
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(f'''
        import asyncio
        from pathlib import Path
        from dagrun import flow, task

        @task
        async def wait_long():
            Path({str(started)!r}).touch()
            await asyncio.sleep(120)

        @flow
        async def long_flow():
            await wait_long()

        if __name__ == "__main__":
            asyncio.run(long_flow())
    '''))
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not started.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # once: asyncio.run alone would need a second one
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "Finished in state Cancelled" in stderr


def test_dagrun_run_runs_an_async_flow_from_a_file(tmp_path):
    from console_script import dagrun

    (tmp_path / "async_flow.py").write_text(textwrap.dedent('''
        import asyncio
        from dagrun import flow, task

        @task
        async def square(x):
            await asyncio.sleep(0.1)
            return x * x

        @flow
        async def squares(n: int = 3):
            values = await asyncio.gather(*[square(i) for i in range(n)])
            print("squares", values)
    '''))
    result = dagrun("run", "async_flow.py", "--param", "n=4", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["squares [0, 1, 4, 9]"]
    assert "Finished in state Completed" in result.stderr


_MANY = 40  # more than the thread executor's default pool (min(32, CPUs + 4))
_meeting: dict[str, asyncio.Barrier] = {}  # keyed by flow run: every task awaits the others
_running = {"now": 0, "most": 0}


@task
async def meet(run: str) -> int:
    barrier = _meeting.setdefault(run, asyncio.Barrier(_MANY))  # all on the one task loop
    return await asyncio.wait_for(barrier.wait(), timeout=30)


def test_async_tasks_on_the_thread_executor_all_run_at_once():
    from dagrun.executors import ThreadExecutor

    @flow(executor=ThreadExecutor())
    async def gathering(run: str) -> list[int]:
        return sorted(await asyncio.gather(*[meet(run) for _ in range(_MANY)]))

    # Each task waits until all _MANY are waiting: only true if none waits for a pool thread.
    assert asyncio.run(gathering("default-pool")) == list(range(_MANY))


@task
async def counted() -> None:
    _running["now"] += 1  # on the one task loop: no lock needed
    _running["most"] = max(_running["most"], _running["now"])
    await asyncio.sleep(0.05)
    _running["now"] -= 1


def test_an_explicit_max_workers_bounds_async_tasks_too():
    from dagrun.task_runners import ThreadPoolTaskRunner

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    async def bounded() -> None:
        await asyncio.gather(*[counted() for _ in range(8)])

    asyncio.run(bounded())
    assert _running["most"] == 2
