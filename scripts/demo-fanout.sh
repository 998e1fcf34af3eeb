#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fan-out: one put, three notifications (topics thumbnails, metadata, index), one group and
# one result bucket per topic. Fresh pool ${FABRIC_SHM_POOL:-demo-fanout}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
demo_init fanout demo-fanout fresh
samples="$demo_repo/scripts/samples"
mapfile -t keys < <(keys_of "$samples")

start_worker thumbnails --topic thumbnails --group thumbnailers --exec 'head -c 24' --result-bucket thumbnails
start_worker metadata --topic metadata --group extractors --builtin crc32 --result-bucket metadata
start_worker index --topic index --group indexers --exec 'wc -w' --result-bucket index
wait_members thumbnails thumbnailers 1
wait_members metadata extractors 1
wait_members index indexers 1

say "one put per file, notified on three topics"
"$producer" --bucket uploads --topic thumbnails --topic metadata --topic index "$samples"
for b in thumbnails metadata index; do wait_results uploads "$b" 30 "${keys[@]}"; done
for k in "${keys[@]}"; do
    printf '%-18s thumbnail: %-26s crc32: %s  words: %s\n' "$k" \
        "$("$cli" get "fabric://$pool/thumbnails/uploads/$k" | tr '\n' ' ' | head -c 24)" \
        "$("$cli" get "fabric://$pool/metadata/uploads/$k" | tr -d '\n')" \
        "$("$cli" get "fabric://$pool/index/uploads/$k" | tr -d ' \n')"
done
while [ "${#demo_pids[@]}" -gt 0 ]; do stop_worker "${demo_pids[0]}"; done
for w in thumbnails metadata index; do summary_line "$w"; done
say "ok: ${#keys[@]} objects, 3 results each"
