#!/usr/bin/env bash
# The Django integration tests (tests/django) on every supported Django, each in its own
# virtualenv under .venv/django/ (kept between runs: a second run only re-checks the installs):
#
#   Django 6.1 (if on PyPI) on Python 3.12   psycopg 3, and psycopg 2 (Django's connections)
#   Django 6.0 on Python 3.13                psycopg 3, and psycopg 2 for the transaction tests
#   Django 5.2 + django-tasks on Python 3.12 psycopg 3, and psycopg 2 for the transaction tests
#
# Uses PGQUEUE_TEST_DSN, else the server on 127.0.0.1:5432 when it answers, else the embedded
# server. Exits non-zero when any run fails. Called by .ci/run; runs on its own too.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

find_python() {  # find_python 3.12 -> a python3.12 executable, or nothing
    local version=$1 candidate
    for candidate in "python$version" "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/"$version"*/bin/"python$version" \
                     /usr/bin/"python$version" /usr/local/bin/"python$version"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

extras='.[dev,django]'
if [ -z "${PGQUEUE_TEST_DSN:-}" ]; then
    if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
        export PGQUEUE_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test
    else
        echo "=== no PGQUEUE_TEST_DSN and no server on 127.0.0.1:5432: the embedded server ==="
        extras='.[dev,django,embedded]'
    fi
fi

status=0
summary=()

# setup NAME PYTHON_VERSION PIP_REQUIREMENT... -> .venv/django/NAME ready, or return 1 (2: skipped)
setup() {
    local name=$1 version=$2; shift 2
    local python venv=".venv/django/$name"
    if ! python=$(find_python "$version"); then
        echo "=== $name: no Python $version on this machine ==="
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" || return 1
    fi
    local log="$venv/pip.log"
    if ! "$venv/bin/pip" install -q -e "$extras" "$@" >"$log" 2>&1; then
        if grep -q "No matching distribution found" "$log"; then
            echo "=== $name: $* is not on PyPI (yet): skipped ==="
            return 2
        fi
        cat "$log"
        return 1
    fi
}

# run NAME DRIVER [PYTEST ARGS...]
run() {
    local name=$1 driver=$2; shift 2
    local venv=".venv/django/$name" t0=$SECONDS
    echo "=== $name, Django's connections on $driver: $("$venv/bin/python" -c 'import django; print("Django", django.get_version())') ==="
    [ $# -gt 0 ] || set -- tests/django
    if PGQ_DJANGO_DRIVER=$driver "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"; then
        summary+=("ok      $name/$driver ($((SECONDS - t0)) s)")
    else
        summary+=("FAILED  $name/$driver ($((SECONDS - t0)) s)")
        status=1
    fi
}

transactions=(tests/django/test_django_enqueue.py tests/django/test_django_backend.py)

setup django61 3.12 'django>=6.1,<6.2'; rc=$?
if [ $rc -eq 0 ]; then
    run django61 psycopg
    run django61 psycopg2
elif [ $rc -eq 1 ]; then
    summary+=("FAILED  django61 (set-up)"); status=1
fi

if setup django60 3.13 'django>=6.0,<6.1'; then
    run django60 psycopg
    run django60 psycopg2 "${transactions[@]}"
else
    summary+=("FAILED  django60 (set-up)"); status=1
fi

if setup django52 3.12 'django>=5.2,<5.3' 'django-tasks>=0.12'; then
    run django52 psycopg
    run django52 psycopg2 "${transactions[@]}"
else
    summary+=("FAILED  django52 (set-up)"); status=1
fi

echo "=== Django integration: $((SECONDS - started)) s ==="
printf '  %s\n' "${summary[@]}"
exit $status
