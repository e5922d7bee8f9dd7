#!/usr/bin/env bash
# Every path of the multi-core issue (18) in one session: each bench beside the floor of the same design,
# Orthanc in the same rounds (each script interleaves its systems round by round). The machine is shared:
# compare ratios within this session, never absolute numbers across sessions.
#
#   bench/multicore.sh [out-folder]        COUNT=500 ROUNDS=3 by default; tables in <out>/*.md, JSON beside
#   ONLY="cstore floor-cstore" bench/multicore.sh [out-folder]   only the benches named
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/multicore-$(date -u +%Y%m%dT%H%M)}
count=${COUNT:-500}
rounds=${ROUNDS:-3}
mkdir -p "$out"
run() {  # one bench; a failing one is reported and the session goes on
  local name=$1
  shift
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "== $name: $* ($(date -u '+%a %b %d %H:%M UTC %Y'); load $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$out/$name.md"
  python "$@" --json "$out/$name.json" | tee -a "$out/$name.md" || echo "FAILED: $name (exit ${PIPESTATUS[0]})" | tee -a "$out/$name.md"
}
run floor-rest bench/floor.py --which rest --count "$count" --rounds "$rounds"
run rest bench/ingest_rest.py --count "$count" --rounds "$rounds"
run floor-rest-4 bench/floor.py --which rest --clients 4 --count "$count" --rounds "$rounds"
run rest-4 bench/ingest_rest.py --clients 4 --count "$count" --rounds "$rounds"
run floor-rest-16 bench/floor.py --which rest --size 16 --count $((count * 2)) --rounds "$rounds"
run rest-16 bench/ingest_rest.py --size 16 --count $((count * 2)) --rounds "$rounds"
run floor-cstore bench/floor.py --which cstore --count "$count" --rounds "$rounds"
run floor-cstore-4 bench/floor.py --which cstore --associations 4 --count "$count" --rounds "$rounds"
run cstore bench/cstore.py --count "$count" --rounds "$rounds"
run floor-download bench/floor.py --which download --count "$count" --rounds "$rounds"
run anonymize bench/anonymize.py --count "$count" --rounds "$rounds"
run floor-anonstore bench/floor.py --which anonstore --count "$count" --rounds "$rounds"
run floor-box bench/floor.py --which box --count "$count" --rounds "$rounds"
run box bench/box_transfer.py --mode push --count "$count" --rounds "$rounds"
run query bench/query.py --patients 1000 --per-patient 10
