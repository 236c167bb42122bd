#!/usr/bin/env bash
# Debian packages the tests drive for real, installed when missing: chromium (the dashboard's
# browser tests, launched from /usr/bin/chromium: a browser is never downloaded) and pgbouncer
# (the pooler tests start their own on a free port). Then the playwright Python package that
# drives chromium (already in the dev extra; installed here too so the script stands alone).
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q 'playwright>=1.40'
echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"
echo "pgbouncer: $("$(command -v pgbouncer || echo /usr/sbin/pgbouncer)" --version | head -n 1)"
