#!/usr/bin/env bash
# The one-call check of salt on a GPU machine: install, demo data, GPU tests, training-step and
# dataloader benchmarks; every figure in one JSON.
#
#     benchmarks/device_check.sh          # on the GPU machine, from the repository root
#     benchmarks/device_check.sh --cpu    # the same parts at tiny sizes on a CPU (CI runs this)
#
# Writes $OUT/device_check.json and $OUT/device_check.log ($OUT: the device tool's results
# folder; elsewhere /tmp/salt_device_check unless --out DIR is given). Needs the wheels that
# `benchmarks/device_wheels.sh .whl` downloads, in .whl/ (carried with the call). The parts and
# their time limits are in benchmarks/device_check.py. Exit status 0: every part succeeded.
set -uo pipefail
cd "$(dirname "$0")/.."
# the GPU image's interpreter holds torch; on a CPU, the active environment's
exec "${PYTHON:-python3}" benchmarks/device_check.py "$@"
