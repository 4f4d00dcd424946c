#!/usr/bin/env bash
# Install what a fresh machine lacks: mosquitto, nginx (for `plaza up --tls`), chromium,
# certutil and a Korean font (Debian packages; the browser tests need the last three), promtool
# (Debian's prometheus package: the tests check deploy/prometheus/ with it), a virtualenv with
# the project and its pinned dependencies (constraints.txt), and the web client's npm package
# (mqtt.js, api/web). Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# `plaza up --tls`: nginx terminates the browsers' TLS 1.3 (Mosquitto 2.0.11's WebSocket
# listener ignores tls_version); certutil puts the venue CA into the browser tests' trust store.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v certutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
# Korean is the web client's default language: without a Hangul font screenshots show boxes.
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list :lang=ko 2>/dev/null | head -1)" ]; then
    need_apt+=(fonts-nanum)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt-get)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# promtool ships in Debian's prometheus package; only the binary is wanted (no exporters from
# its recommendations; the server it installs is not started or used).
if ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing prometheus (for promtool; apt-get)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    [ ${#need_apt[@]} -gt 0 ] || $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing the project and its pinned dependencies"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -c constraints.txt -e ".[test,dev]"
    touch "$stamp"
fi

# The web client's only dependency, mqtt.js, served from api/web/node_modules/mqtt/dist.
web=api/web
if [ ! -d "$web/node_modules/mqtt/dist" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
    echo "setup: installing the web client's npm packages (npm ci)"
    npm ci --prefix "$web" --no-audit --no-fund --loglevel=error
fi
