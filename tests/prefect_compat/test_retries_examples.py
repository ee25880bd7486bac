"""Prefect's retries how-to, its examples with `prefect` -> `dagrun` in the imports.

Source: PrefectHQ/prefect docs/v3/how-to-guides/workflows/retries.mdx. The calls to
`https://httpbin.org` and the URL of the custom-condition example are served by a local HTTP
server here (no network in tests); the examples are otherwise unchanged.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from prefect_examples import flow_runs, load_example, messages, on_executor  # noqa: F401

FLOW_RETRIES = '''\
from dagrun import flow


@flow(retries=3)
def troublesome_workflow():
    raise Exception("oopsie daisy")
'''

FLOW_RETRY_DELAY = '''\
from dagrun import flow


@flow(retries=3, retry_delay_seconds=2.7182)
def troublesome_workflow():
    raise Exception("oopsie daisy")
'''

DELAY_LIST = '''\
from dagrun import task


@task(retries=4, retry_delay_seconds=[1, 2, 4, 8])
def melancholic_task():
    raise Exception("We used to see each other so much more often")
'''

EXPONENTIAL_BACKOFF = '''\
from dagrun import task
from dagrun.tasks import exponential_backoff


@task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=2))
def melancholic_task():
    raise Exception("We used to see each other so much more often")
'''

RETRY_CONDITION = '''\
import httpx
from dagrun import flow, task


def retry_handler(task, task_run, state) -> bool:
    """
    Retry handler that skips retries if the HTTP status code is 401 or 404.
    """
    try:
        state.result()
    except httpx.HTTPStatusError as exc:
        do_not_retry_on_these_codes = [401, 404]
        return exc.response.status_code not in do_not_retry_on_these_codes
    except httpx.ConnectError:
        return False
    except:
        return True


@task(retries=1, retry_condition_fn=retry_handler)
def api_call_task(url):
    response = httpx.get(url)
    response.raise_for_status()
    return response.json()


@flow
def my_workflow(url):
    api_call_task(url=url)
'''

JITTER = '''\
import time

from dagrun import task
from dagrun.tasks import exponential_backoff

last_run_time = time.time()

@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=3,
)
def some_task_with_exponential_backoff_retries():
    global last_run_time
    print(f"Time between retries: {time.time() - last_run_time}")
    if time.time() - last_run_time < 10:
        last_run_time = time.time()
        raise Exception("I could fail some more")
    return "That's enough failure"
'''


class _StatusServer(http.server.ThreadingHTTPServer):
    """Answers GET /status/<code> with that code, and counts the requests per path."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.requests.append(self.path)
                self.send_response(int(self.path.rsplit("/", 1)[1]))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_flow_retries_rerun_the_body_then_fail(on_executor, tmp_path, run_logs):
    example = load_example(tmp_path, FLOW_RETRIES)
    with pytest.raises(Exception, match="oopsie daisy"):
        example.troublesome_workflow()
    retries = [message for message in messages(run_logs) if message.startswith("Retry ")]
    assert len(retries) == 3, messages(run_logs)  # four attempts in all
    [run] = flow_runs()
    assert run["state"] == "Failed"


def test_flow_retries_wait_their_delay(on_executor, tmp_path):
    example = load_example(tmp_path, FLOW_RETRY_DELAY)
    started = time.monotonic()
    with pytest.raises(Exception, match="oopsie daisy"):
        example.troublesome_workflow()
    assert time.monotonic() - started >= 3 * 2.7182


def test_retry_delays_as_a_list_and_as_exponential_backoff(tmp_path):
    # Prefect keeps one delay per retry on the task: the list as given, the backoff expanded.
    assert load_example(tmp_path, DELAY_LIST).melancholic_task.retry_delay_seconds == [1, 2, 4, 8]
    assert load_example(tmp_path, EXPONENTIAL_BACKOFF).melancholic_task.retry_delay_seconds == [2, 4, 8, 16]


def test_retry_condition_fn_retries_a_server_error_but_not_a_404(on_executor, tmp_path, status_server):
    example = load_example(tmp_path, RETRY_CONDITION)
    base = f"http://127.0.0.1:{status_server.server_address[1]}/status"
    import httpx

    with pytest.raises(httpx.HTTPStatusError, match="404"):
        example.my_workflow(f"{base}/404")
    assert status_server.requests == ["/status/404"]  # 404: not retried
    status_server.requests.clear()
    with pytest.raises(httpx.HTTPStatusError, match="500"):
        example.my_workflow(f"{base}/500")
    assert status_server.requests == ["/status/500", "/status/500"]  # retried once
    assert example.my_workflow(f"{base}/200") is None


def test_retry_jitter_factor_is_kept_on_the_task(tmp_path):
    some_task = load_example(tmp_path, JITTER).some_task_with_exponential_backoff_retries
    assert some_task.retries == 3 and some_task.retry_jitter_factor == 3
    assert some_task.retry_delay_seconds == [5, 10, 20]
