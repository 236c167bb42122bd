"""Tasks for the benchmarks (the App reads PGQUEUE_DSN and PGQUEUE_SCHEMA)."""

import pgqueue

app = pgqueue.App()


@app.task(name="noop")
def noop() -> None:
    return None
