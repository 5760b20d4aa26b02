#!/bin/sh
# Start tritonserver with the admin APIs (shared memory, repository, trace, logging, statistics) locked behind
# TRITON_ADMIN_KEY (or the file TRITON_ADMIN_KEY_FILE names). Refuses to start without a key; other arguments go to tritonserver unchanged.
set -eu
# Kubernetes mounts the key from a Secret as a file (deploy/k8s); compose passes it in the environment
if [ -n "${TRITON_ADMIN_KEY_FILE:-}" ]; then
    TRITON_ADMIN_KEY=$(cat "$TRITON_ADMIN_KEY_FILE")
fi
if [ -z "${TRITON_ADMIN_KEY:-}" ]; then
    echo "error: TRITON_ADMIN_KEY is not set; export TRITON_ADMIN_KEY=\$(openssl rand -hex 16) before" \
         "'docker compose up triton' (clients send it in the triton-admin-key header)" >&2
    exit 2
fi
apis="shared-memory,model-repository,trace,logging,statistics"
exec tritonserver "--http-restricted-api=${apis}:triton-admin-key=${TRITON_ADMIN_KEY}" \
    "--grpc-restricted-protocol=${apis}:triton-admin-key=${TRITON_ADMIN_KEY}" "$@"
