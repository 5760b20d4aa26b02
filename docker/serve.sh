#!/bin/sh
# Start tritonserver with the admin APIs (shared memory, repository, trace, logging) locked behind
# TRITON_ADMIN_KEY. Refuses to start without a key; other arguments go to tritonserver unchanged.
set -eu
if [ -z "${TRITON_ADMIN_KEY:-}" ]; then
    echo "error: TRITON_ADMIN_KEY is not set; export TRITON_ADMIN_KEY=\$(openssl rand -hex 16) before" \
         "'docker compose up triton' (clients send it in the triton-admin-key header)" >&2
    exit 2
fi
apis="shared-memory,model-repository,trace,logging"
exec tritonserver "--http-restricted-api=${apis}:triton-admin-key=${TRITON_ADMIN_KEY}" \
    "--grpc-restricted-protocol=${apis}:triton-admin-key=${TRITON_ADMIN_KEY}" "$@"
