#!/usr/bin/env bash
# What the dashboard's browser tests need, for .ci/run to call before pytest (inside the
# virtualenv): Debian's chromium, and the playwright Python package that drives it. A browser
# is never downloaded (no `playwright install`): the tests launch /usr/bin/chromium. Without
# chromium the browser tests skip and say why; with it they run in the default test run.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends chromium
fi

# Already in the dev extra; installed here too so the script stands on its own.
python3 -m pip install -q 'playwright>=1.40'

echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"
python3 -c "import playwright; from importlib.metadata import version; print('playwright', version('playwright'))"
