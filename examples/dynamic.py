"""A dynamic flow: ordinary Python loops and branches on task results.

Follows the Collatz sequence from `start`: each step is a task, and whether another step
runs depends on the previous task's value, read with `.result()`.

    python examples/dynamic.py
    dagrun run examples/dynamic.py --param start=27
"""

from dagrun import flow, get_run_logger, task


@task
def step(n: int) -> int:
    return n // 2 if n % 2 == 0 else 3 * n + 1


@flow(name="collatz")
def collatz(start: int = 6) -> int:
    n, steps = start, 0
    while n != 1:  # branches on runtime data: plain Python
        n = step(n).result()
        steps += 1
    get_run_logger().info("%d reaches 1 after %d steps", start, steps)
    return steps


if __name__ == "__main__":
    print(f"Steps: {collatz()}")
