#!/bin/sh
# Starts the enclave app on the parent instance, after keygate-forward.service.
#
# The vsock ports (defaults of the code; an enclave gets no environment from
# nitro-cli, so the values baked into the image are the ones used):
#   8000  the parent's forwarder, dialled by the app on CID 3 (KEYGATE_FORWARDER=vsock:3:8000)
#         -> keygate forward --listen vsock:8000 --allow broker.internal:8443
#   5005  the app's health endpoint, inside the enclave (APP_VSOCK_PORT), at ENCLAVE_CID
#   9000  nitro-cli's boot heartbeat on CID 3: used by nothing of keygate's
# The broker (elsewhere, never on this instance) listens on 8443 (broker "listen" default port).
set -eu

EIF=${EIF:-/opt/keygate/keygate-enclave.eif}
ENCLAVE_CID=${ENCLAVE_CID:-16}
FORWARDER_VSOCK_PORT=8000
APP_VSOCK_PORT=5005
BROKER=broker.internal:8443

systemctl is-active --quiet keygate-forward.service || {
  echo "keygate-forward.service is not running: the enclave could not reach the broker ($BROKER via vsock:$FORWARDER_VSOCK_PORT)" >&2
  exit 1
}

nitro-cli run-enclave --eif-path "$EIF" --cpu-count 2 --memory 2048 --enclave-cid "$ENCLAVE_CID"

echo "enclave CID $ENCLAVE_CID: app health on vsock $ENCLAVE_CID:$APP_VSOCK_PORT; forwarder vsock:$FORWARDER_VSOCK_PORT -> $BROKER"
