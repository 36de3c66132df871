#!/usr/bin/env bash
# nginx stream with `proxy_half_close on` (nginx >= 1.21.4), as a peer for
# ../shared/bench/measure.sh: the same config as its builtin `nginx` peer,
# plus half-close, which monconn's forwarder always does (one side's EOF is
# passed on as a write shutdown, and the other direction goes on). nginx's
# default, off, ends the session at the first EOF.
#
#   measure.sh 'nginx-hc=bash examples/forwarder/bench/nginx_half_close.sh' ...
#
# Run from the directory measure.sh gives it, with $LPORT and $BPORT set;
# stays in the foreground. HALF_CLOSE=off gives measure.sh's plain nginx.
set -euo pipefail
dir=$PWD
cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
stream {
    server {
        listen 127.0.0.1:$LPORT;
        proxy_pass 127.0.0.1:$BPORT;
        proxy_timeout 10m;
        proxy_half_close ${HALF_CLOSE:-on};
    }
}
CONF
exec nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
