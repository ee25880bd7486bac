"""Fan-out / fan-in: one task per item with `map`, then one reduce over all results.

    python examples/fan_out.py
    dagrun run examples/fan_out.py --param n=100
"""

from dagrun import flow, task, unmapped


@task
def square(x: int, offset: int) -> int:
    return x * x + offset


@task
def total(values: list[int]) -> int:
    return sum(values)


@flow(name="fan_out")
def fan_out(n: int = 20, offset: int = 0) -> int:
    squares = square.map(range(n), offset=unmapped(offset))  # one task per item, in order
    return total(squares)  # waits for every square; values move worker-to-worker


if __name__ == "__main__":
    print(f"Sum of squares: {fan_out()}")
