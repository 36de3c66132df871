#!/usr/bin/env bash
# The system packages that the tests run against real peers need: HAProxy
# (a load balancer sending the PROXY protocol) and nginx with its stream
# module (a backend reading it); chromium and its WebDriver (the admin
# dashboard's browser test, tests/admin/browser.rs); redis-server (the
# shared ban list's tests, examples/forwarder/tests/forwarder/cluster.rs).
# Idempotent: quick when they are installed.
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# The stream module, loaded by the tests' nginx.conf.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
# The dashboard's browser test: headless chromium driven by chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
