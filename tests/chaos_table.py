"""Render the chaos runs' summary tables (the JSON lines PGQUEUE_CHAOS_REPORT collects) as the
Markdown table of docs/chaos.md: ``python tests/chaos_table.py chaos-report.jsonl``."""

from __future__ import annotations

import json
import sys


def render(lines: list[str]) -> str:
    out = ["| run | fault | injected | jobs | executions | lost | stale writes applied | duplicates (causes) "
           "| retries (task failed) | leases lost / zombie outcomes fenced out | recovery median / max (s) | seed |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: |"]
    for line in lines:
        run = json.loads(line)
        check = run["checker"]
        causes = ", ".join(f"{k} {v}" for k, v in sorted(check["duplicate_causes"].items())) or "none"
        for fault, figures in sorted(run["faults"].items()):
            out.append(
                f"| {run['label']} | {fault} | {figures['injected']} | {check['jobs']} | {check['executions']} "
                f"| {check['lost']} | {check['stale_writes']} | {check['duplicates']} ({causes}) | {check['retries']} "
                f"| {run['leases_lost']} / {run['outcomes_fenced_out']} "
                f"| {figures['recovery_median_s']} / {figures['recovery_max_s']} | {run['seed']} |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as source:
        print(render([line for line in source if line.strip()]))
