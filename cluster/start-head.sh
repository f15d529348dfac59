#!/usr/bin/env bash
# Start the head node of a manual o2o Ray cluster (no `ray up`, no KubeRay).
#
# Usage, on the head machine, with the platform installed (`pip install -e .` in a
# Python 3.11 venv that is active, so `ray` and `serve` are on PATH):
#
#   cluster/start-head.sh [more `ray start` flags ...]
#   cluster/start-worker.sh HEAD_IP            # then on every worker
#   serve deploy cluster/serve_config.yaml     # once, from any node (dashboard :8265)
#   ray stop                                   # on each node, to stop it
#
# The environment comes from O2O_ENV_FILE (default /etc/o2o/o2o.env; see
# cluster/o2o.env.example). The node declares the `o2o_hosts` resource, so entity host
# actors may be placed on it; O2O_API_ONLY=1 leaves it out (API replicas only).
# The HAProxy switches below are the same in cluster/start-worker.sh,
# cluster/cluster.yaml and cluster/rayservice.yaml (tests/unit/test_deploy_files.py).
set -euo pipefail

env_file="${O2O_ENV_FILE:-/etc/o2o/o2o.env}"
if [[ ! -r "$env_file" ]]; then
    echo "start-head: $env_file is missing or unreadable (see cluster/o2o.env.example)" >&2
    exit 1
fi
# Every variable of the file is exported to `ray start`, and from it to every host
# actor and Serve replica on this node.
set -a
# shellcheck source=/dev/null
. "$env_file"
set +a

# The platform refuses to start with short or missing secrets; say so now rather than
# when the replicas fail after `serve deploy`.
jwt="${O2O_JWT_SECRET:-}" payment="${O2O_PAYMENT_SECRET:-}" key="${O2O_DATA_KEY:-}"
key_bytes="$(printf '%s' "$key" | base64 -d 2>/dev/null | wc -c || true)"
if (( ${#jwt} < 32 || ${#payment} < 16 || key_bytes != 32 )); then
    echo "start-head: set O2O_JWT_SECRET (32+ characters), O2O_PAYMENT_SECRET (16+)" \
        "and O2O_DATA_KEY (32 bytes, base64: openssl rand -base64 32) in $env_file" >&2
    exit 1
fi
unset jwt payment key key_bytes

# Serve's HAProxy ingress. Serve's controller and proxies read these from the
# environment of the node they run on, which is the environment of `ray start`.
export RAY_SERVE_ENABLE_HA_PROXY=1
# Long polls and WebSockets are not cut by HAProxy.
export RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S=3600
# Serve's default is 4,096 connections.
export RAY_SERVE_HAPROXY_MAXCONN=30000
# Handlers run on the replica's own event loop (placement 960 -> 1,300/s).
export RAY_SERVE_THROUGHPUT_OPTIMIZED=1
# No log line per request for Serve to parse (7% of a core at 1,700 requests/s).
export RAY_SERVE_HAPROXY_METRICS_ENABLED=0
# HAProxy's own Prometheus endpoint on every node (cluster/prometheus.yml).
export RAY_SERVE_HAPROXY_METRICS_PORT=9101

# HAProxy needs about 2.5 file descriptors per connection and refuses to start when
# the limit cannot cover its maxconn: raise the hard `nofile` limit if this fails.
ulimit -Sn 100000

resources='{"o2o_hosts": 1}'
if [[ "${O2O_API_ONLY:-0}" == 1 ]]; then
    resources='{}'
fi

# 6379: GCS (workers join here); 8265: dashboard (serve deploy, serve status);
# 8080: this node's metrics (Prometheus finds it through Ray's service discovery file).
exec ray start --head \
    --port=6379 \
    --dashboard-host=0.0.0.0 \
    --metrics-export-port=8080 \
    --resources="$resources" \
    "$@"
