#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Expiry: a pool with a 3 s TTL. While the producer and worker run they renew the leases;
# once every process stops, nobody renews, readers fail closed (LeaseExpired), and the reaper
# removes the pool. Fresh pool ${FABRIC_SHM_POOL:-demo-expiry}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
DEMO_POOL_OPTS="--ttl 3s" demo_init expiry demo-expiry fresh
samples="$demo_repo/scripts/samples"

"$producer" --bucket uploads --topic events "$samples"
say "a worker processes everything and exits when idle (it renewed the leases while it ran)"
"$worker" --topic events --group g --builtin copy --exit-when-idle 1s --quiet
"$cli" lease ls
say "no process renews any more; waiting for the 3 s TTL to run out"
sleep 3.5
"$cli" pool ls
key=$(keys_of "$samples" | head -1)
if "$cli" get "fabric://$pool/results/uploads/$key" >/dev/null 2>"$demo_tmp/get.err"; then
    say "unexpected: the result is still readable"; exit 1
fi
say "reading a result now fails closed: $(cat "$demo_tmp/get.err")"
"$reaper" --pool "$pool"
if "$cli" pool ls --json | grep -q "\"name\":\"$pool\""; then
    say "unexpected: pool '$pool' still exists"; exit 1
fi
demo_created_pool=0  # the reaper removed it
say "ok: pool '$pool' expired and was removed by the reaper"
