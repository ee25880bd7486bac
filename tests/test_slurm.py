"""A flow on a real single-node Slurm (munged, slurmctld and slurmd started here, see
`slurm_cluster`), through a copy of the shipped `cluster_configs/slurm.yaml` and the real
`dagrun run`: tasks run inside Slurm jobs that adaptive scaling submits when tasks arrive, and
the jobs are cancelled when the run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dagrun.history import HistoryStore
from slurm_cluster import INSTALL_HINT, PARTITION, SlurmCluster, missing_binaries

REPOSITORY = Path(__file__).resolve().parents[1]

FLOW = '''
import json, os, time
from pathlib import Path
from dagrun import flow, task


@task
def where(x):
    return {"job": os.environ.get("SLURM_JOB_ID"), "started": time.time(), "value": x * x}


@task
def total(results):
    return {"job": os.environ.get("SLURM_JOB_ID"), "sum": sum(r["value"] for r in results)}


@flow(name="on_slurm")
def on_slurm(n: int = 4):
    parts = where.map(range(n))
    values = {"parts": [part.result() for part in parts], "total": total(parts).result()}
    Path("result.json").write_text(json.dumps(values))  # read by the test
    return values
'''


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    missing = missing_binaries()
    if missing:
        message = f"Slurm missing ({', '.join(missing)} not found): {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = SlurmCluster.start(tmp_path / "slurm")
    try:
        monkeypatch.setenv("SLURM_CONF", str(cluster.config))
        yield cluster
    finally:
        cluster.stop()


def slurm_config(directory: Path, **changes) -> Path:
    """The shipped slurm.yaml with what this one-node test cluster needs changed: its
    partition, 1 core and 1 GB per job, no node features, the same Python on the node (so no
    prologue), and every socket on 127.0.0.1."""
    config = yaml.safe_load((REPOSITORY / "cluster_configs" / "slurm.yaml").read_text())
    kwargs = config["cluster"]["kwargs"]
    kwargs.update(
        queue=PARTITION, cores=1, memory="1GB", processes=1, job_extra_directives=[], job_script_prologue=[],
        local_directory=str(directory / "worker-space"), log_directory=str(directory / "job-logs"),
    )
    kwargs["worker_extra_args"] = [*kwargs["worker_extra_args"], "--host", "127.0.0.1"]
    config["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    config["adapt"] = {"minimum": 0, "maximum": 2}
    config.update(changes)
    (directory / "cluster_configs").mkdir(parents=True, exist_ok=True)
    path = directory / "cluster_configs" / "slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_flow_runs_in_slurm_jobs_that_are_cancelled_when_the_run_ends(slurm, tmp_path, dagrun_home):
    slurm_config(tmp_path)
    (tmp_path / "flow.py").write_text(FLOW)
    started = time.time()
    run = subprocess.Popen(
        ["dagrun", "run", "flow.py", "--cluster", "slurm", "--param", "n=4"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    jobs_seen: dict[str, str] = {}  # job id -> state, polled while the run goes on
    try:
        while run.poll() is None and time.time() - started < 240:
            for job, name, state in slurm.queue():
                jobs_seen[job] = state if name == "dagrun-worker" else f"other job {name}"
            time.sleep(0.2)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, f"{stderr}\n{slurm.logs()}"

    with HistoryStore.from_env() as store:
        [flow_run] = store.list_flow_runs(flow_name="on_slurm")
        task_runs = store.get_flow_run(flow_run["id"])["task_runs"]
    assert flow_run["state"] == "Completed"
    assert len(task_runs) == 5 and {t["state"] for t in task_runs} == {"Completed"}
    # Every task ran inside one of the jobs adaptive scaling submitted (at most 2 at once).
    assert jobs_seen and set(jobs_seen.values()) <= {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}, jobs_seen
    values = json.loads((tmp_path / "result.json").read_text())
    task_jobs = {part["job"] for part in values["parts"]} | {values["total"]["job"]}
    assert None not in task_jobs and task_jobs <= set(jobs_seen), (task_jobs, jobs_seen)
    assert values["total"]["sum"] == 0 + 1 + 4 + 9
    # The run ended by cancelling its jobs: none left in the queue, each recorded as cancelled.
    deadline = time.monotonic() + 30
    while any(job in jobs_seen for job, _, _ in slurm.queue()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [job for job, _, _ in slurm.queue() if job in jobs_seen]
    finished = slurm.completions()
    assert {finished.get(job) for job in jobs_seen} == {"CANCELLED"}, finished
    first_task = min(part["started"] for part in values["parts"])
    print(f"Slurm-backed flow: first task started {first_task - started:.1f} s after `dagrun run`; "
          f"{len(jobs_seen)} job(s) submitted")



def test_workers_that_join_later_are_version_checked(slurm, tmp_path, dagrun_home):
    # The job's workers find a dagrun 0.0.1 distribution first on their sys.path: the metadata
    # Dask's version report reads (their code is still this checkout's).
    other_site = tmp_path / "other-site-packages"
    (other_site / "dagrun-0.0.1.dist-info").mkdir(parents=True)
    (other_site / "dagrun-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: dagrun\nVersion: 0.0.1\n")
    pythonpath = os.pathsep.join(filter(None, [str(other_site), os.environ.get("PYTHONPATH")]))
    slurm_config(tmp_path, worker_env={"PYTHONPATH": pythonpath})
    (tmp_path / "flow.py").write_text(FLOW)
    run = subprocess.run(
        ["dagrun", "run", "flow.py", "--cluster", "slurm"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 2, f"{run.stderr}\n{slurm.logs()}"
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: "), run.stderr
    assert "worker tcp://127.0.0.1:" in line and "has dagrun 0.0.1 (driver: 0.1.0)" in line, line
    assert "it was given no tasks" in line, line
    assert not (tmp_path / "result.json").exists()
    with HistoryStore.from_env() as store:
        [flow_run] = store.list_flow_runs(flow_name="on_slurm")
        task_runs = store.get_flow_run(flow_run["id"])["task_runs"]
    assert flow_run["state"] == "Failed"
    assert not [t for t in task_runs if t["state"] == "Completed"], task_runs  # none ran on that worker
    deadline = time.monotonic() + 30
    while slurm.queue() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slurm.queue() == []  # its jobs were cancelled with the run
