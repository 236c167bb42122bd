"""Tasks for the benchmarks (the App reads PGQUEUE_DSN and PGQUEUE_SCHEMA)."""

import time

import pgqueue

app = pgqueue.App()


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
