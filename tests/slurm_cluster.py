"""A real single-node Slurm on this machine, for tests: `munged`, `slurmctld` and `slurmd` with a
throwaway config in a temporary folder, stopped (and every job cancelled) afterwards.

No cgroups (`proctrack/linuxproc`, `task/none`), private ports, state and spool folders under the
given directory, and job completion written to a text file (`sacct` would need a database).
Client commands (`sbatch`, `squeue`, `scancel`) find this cluster through `SLURM_CONF`.

    with SlurmCluster.start(tmp_path / "slurm") as slurm:
        os.environ.update(slurm.env)   # SLURM_CONF for sbatch/squeue/scancel
        slurm.queue()                  # -> [(job id, name, state), ...]
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PARTITION = "dagrun-test"
DAEMONS = ("munged", "slurmctld", "slurmd")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"


def missing_binaries() -> list[str]:
    """The Slurm and MUNGE programs this machine lacks (they live in /usr/sbin on Debian)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    wanted = [*DAEMONS, "sbatch", "squeue", "scancel"]
    return [name for name in wanted if shutil.which(name, path=search) is None]


def _binary(name: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    found = shutil.which(name, path=search)
    if found is None:
        raise FileNotFoundError(f"{name} not found: {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class SlurmCluster:
    """One node (this machine, by its host name, at 127.0.0.1) in one partition."""

    directory: Path
    config: Path
    job_completions: Path  # one line per finished job, written by jobcomp/filetxt
    daemons: dict[str, subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.config)}

    @classmethod
    def start(cls, directory: Path, cpus: int = 2) -> SlurmCluster:
        directory.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool", "munge", "logs"):
            (directory / sub).mkdir(exist_ok=True)
        os.chmod(directory / "munge", 0o711)  # the socket inside must be reachable
        key = directory / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        socket_path = directory / "munge" / "munge.socket"
        node = socket.gethostname()
        config = directory / "slurm.conf"
        completions = directory / "job_completions.txt"
        config.write_text("\n".join([
            "ClusterName=dagrun-test",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"AuthInfo=socket={socket_path}",
            f"StateSaveLocation={directory / 'state'}",
            f"SlurmdSpoolDir={directory / 'spool'}",
            f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
            f"SlurmdPidFile={directory / 'slurmd.pid'}",
            f"SlurmctldLogFile={directory / 'logs' / 'slurmctld.log'}",
            f"SlurmdLogFile={directory / 'logs' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={completions}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4096 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        cluster = cls(directory, config, completions, {})
        env = {**os.environ, **cluster.env}
        try:
            cluster._run_daemon("munged", [
                _binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
                f"--pid-file={directory / 'munge' / 'munged.pid'}", f"--log-file={directory / 'logs' / 'munged.log'}",
                f"--seed-file={directory / 'munge' / 'munged.seed'}",
            ], env)
            cluster._wait(lambda: socket_path.exists(), "munged's socket")
            cluster._run_daemon("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(config)], env)
            cluster._run_daemon("slurmd", [_binary("slurmd"), "-D", "-f", str(config), "-N", node], env)
            cluster._wait(cluster._node_idle, "the Slurm node to be idle")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run_daemon(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.directory / "logs" / f"{name}.out", "wb") as output:
            self.daemons[name] = subprocess.Popen(
                command, env=env, cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait(self, condition, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            exited = {name: p.returncode for name, p in self.daemons.items() if p.poll() is not None}
            if exited or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what}: not reached within {timeout} s (exited: {exited})\n{self.logs()}"
                )
            time.sleep(0.2)

    def _command(self, *args: str) -> str:
        done = subprocess.run(
            [_binary(args[0]), *args[1:]], env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=30,
        )
        return done.stdout if done.returncode == 0 else ""

    def _node_idle(self) -> bool:
        return self._command("sinfo", "-h", "-N", "-o", "%T").strip() == "idle"

    def queue(self) -> list[tuple[str, str, str]]:
        """(job id, job name, state) of every job Slurm knows that has not ended."""
        out = self._command("squeue", "-h", "-o", "%i|%j|%T")
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def completions(self) -> dict[str, str]:
        """job id -> final state (COMPLETED, CANCELLED, ...) from the job completion file."""
        if not self.job_completions.exists():
            return {}
        finished = {}
        for line in self.job_completions.read_text().splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobId" in fields:
                finished[fields["JobId"]] = fields.get("JobState", "")
        return finished

    def logs(self) -> str:
        parts = []
        for path in sorted((self.directory / "logs").glob("*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (each with its children)."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            subprocess.run(
                [_binary("scancel"), "--partition", PARTITION], env={**os.environ, **self.env},
                capture_output=True, timeout=30,
            )
            deadline = time.monotonic() + 20
            while self.queue() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in reversed(DAEMONS):
            process = self.daemons.get(name)
            if process is None:
                continue
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Job steps slurmd started run in sessions of their own; anything left of them goes too.
        for pid in _pids_with_env("SLURM_CONF", str(self.config)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _pids_with_env(name: str, value: str) -> list[int]:
    """Pids of processes whose environment has name=value (jobs inherit the submitter's)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
