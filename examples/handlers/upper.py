#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A handler in Python: upper-cases each object.
#   PYTHONPATH=python fabric-shm-worker --handler 'python3 examples/handlers/upper.py'
from fabric_shm.handler import run


def handle(request):
    return request.data.upper()


run(handle)
