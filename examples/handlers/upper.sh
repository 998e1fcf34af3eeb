#!/bin/sh
# SPDX-License-Identifier: MIT
# A handler around a line-oriented tool: each object is one line in and one line out of a
# long-lived `sed -u` (unbuffered, so each line comes back at once; a tool that buffers its
# output, like tr, needs `stdbuf -oL`).
#   fabric-shm-worker --handler 'sh examples/handlers/upper.sh'
exec python3 -m fabric_shm.handler --lines sed -u 's/.*/\U&/'
