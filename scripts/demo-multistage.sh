#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Multi-stage pipeline: stage 1 (group 'stage1', upper-case) writes fabric://POOL/stage1/uploads/KEY
# and forwards each result URI to 'stage-2-events'; stage 2 (group 'stage2', `wc -c`) turns
# those into fabric://POOL/stage2/stage1/uploads/KEY (a result is keyed by its input's bucket and
# key). Fresh pool ${FABRIC_SHM_POOL:-demo-multistage}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
demo_init multistage demo-multistage fresh
samples="$demo_repo/scripts/samples"
mapfile -t keys < <(keys_of "$samples")

say "stage 1: uploads-events -> [upper] -> stage1/ -> stage-2-events"
start_worker stage1 --topic uploads-events --group stage1 --builtin upper \
    --result-bucket stage1 --next-topic stage-2-events
say "stage 2: stage-2-events -> [wc -c] -> stage2/"
start_worker stage2 --topic stage-2-events --group stage2 --exec 'wc -c' --result-bucket stage2
wait_members uploads-events stage1 1
wait_members stage-2-events stage2 1

"$producer" --bucket uploads --topic uploads-events "$samples"
wait_results uploads stage1 30 "${keys[@]}"
wait_results stage1 stage2 30 "${keys[@]/#/uploads/}"
for k in "${keys[@]}"; do
    printf '%-20s stage1: %-40.40s stage2: %s\n' "$k" "$("$cli" get "fabric://$pool/stage1/uploads/$k" | head -1)" \
        "$("$cli" get "fabric://$pool/stage2/stage1/uploads/$k" | tr -d ' \n') bytes"
done
stop_worker "${demo_pids[0]}"
stop_worker "${demo_pids[0]}"
summary_line stage1
summary_line stage2
say "ok: ${#keys[@]} objects through two stages"
