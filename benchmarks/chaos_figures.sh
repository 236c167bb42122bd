#!/usr/bin/env bash
# The figures of docs/chaos.md: one long chaos run per fault class (direct, through PgBouncer in
# transaction mode, across failovers), SECONDS of faults each, summaries collected in OUT and
# printed as the doc's table. Usage: bash benchmarks/chaos_figures.sh [SECONDS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=${2:-chaos-figures.jsonl}
rm -f "$out"
export PGQUEUE_TEST_DSN=${PGQUEUE_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/test}
for fault in sigkill sigstop sigterm terminate restart_fast restart_immediate failover failover_immediate; do
    PGQUEUE_CHAOS=long PGQUEUE_CHAOS_SECONDS=$seconds PGQUEUE_CHAOS_FAULTS=$fault PGQUEUE_CHAOS_REPORT=$out \
        pytest -q -m chaos tests/test_chaos.py tests/test_poolers.py tests/test_failover.py
done
python tests/chaos_table.py "$out"
