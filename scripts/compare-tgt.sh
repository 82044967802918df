#!/usr/bin/env bash
# busrig target against tgtd (Debian package tgt), side by side, with the
# same client (`busrig bench`) and identical backing files on the same file
# system, disk model off.
#
#   scripts/compare-tgt.sh [--duration SECS] [--size MIB] [--busrig PATH]
#                          [--only PATTERN] [--keep]
#
# Starts tgtd and `busrig target` on free loopback ports, runs each
# workload against one and then the other, and prints a table with both
# figures, their ratio (busrig / tgtd) and the goal of issue 8. Needs
# root (tgtd's control socket lives in /var/run/tgtd), tgtd, tgtadm and jq.
# --only runs just the workloads whose name matches the grep -E PATTERN
# (for example --only 'qd1|1m-write'). The bench's JSON of every run is
# kept in the work folder with --keep.
set -euo pipefail

. "$(dirname "$0")/bench-common.sh"
parse_options compare-tgt.sh "$@"

for tool in tgtd tgtadm jq; do
    if ! command -v "$tool" >/dev/null; then
        echo "compare-tgt.sh: $tool not found (apt-get install tgt jq)" >&2
        exit 1
    fi
done

root=$(cd "$(dirname "$0")/.." && pwd)
ensure_busrig "$root"

# Same file system as the checkout: that is where users keep LUN files.
work=$(mktemp -d "$root/.compare-tgt.XXXXXX")
tgtd_pid=""
busrig_pid=""
tgt_ctl=""
cleanup() {
    [ -n "$busrig_pid" ] && kill "$busrig_pid" 2>/dev/null && wait "$busrig_pid" 2>/dev/null || true
    [ -n "$tgtd_pid" ] && kill -KILL "$tgtd_pid" 2>/dev/null && wait "$tgtd_pid" 2>/dev/null || true
    # tgtd leaves its control socket and lock file behind.
    [ -n "$tgt_ctl" ] && rm -f "/var/run/tgtd/socket.$tgt_ctl" "/var/run/tgtd/socket.$tgt_ctl.lock"
    if [ "$KEEP" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

echo "backing files: 2 x $SIZE_MIB MiB of random data in $work" >&2
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/tgtd.img"
cp "$work/tgtd.img" "$work/busrig.img"
# Both files start fully in the page cache, so neither target pays for
# the first reads.
cat "$work/tgtd.img" "$work/busrig.img" >/dev/null

# --- tgtd -----------------------------------------------------------------
tgt_port=$(free_port)
tgt_ctl=$((tgt_port % 32000 + 1))
tgt_iqn=iqn.2026-11.io.busrig.compare:tgtd
tgtd -f -C "$tgt_ctl" --iscsi "portal=127.0.0.1:$tgt_port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
adm() { tgtadm -C "$tgt_ctl" --lld iscsi "$@"; }
for _ in $(seq 100); do
    adm --op show --mode target >/dev/null 2>&1 && break
    kill -0 "$tgtd_pid" 2>/dev/null || { echo "tgtd exited:" >&2; cat "$work/tgtd.log" >&2; exit 1; }
    sleep 0.1
done
adm --op new --mode target --tid 1 -T "$tgt_iqn"
adm --op new --mode logicalunit --tid 1 --lun 1 -b "$work/tgtd.img"
adm --op bind --mode target --tid 1 -I ALL
tgt_url="iscsi://127.0.0.1:$tgt_port/$tgt_iqn/1"

# --- busrig target --------------------------------------------------------
start_busrig_target "$work" "$work/busrig.img"

# --- workloads -------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# run NAME URL PID ARGS...: one bench run; prints its JSON file. While it
# runs, the target's resident memory is sampled and the peak kept.
run() {
    local name=$1 url=$2 pid=$3
    shift 3
    local out="$work/$name.json" peak=0 r
    # Dirty pages of an earlier write run are written back now, not by
    # the kernel's flusher in the middle of this run.
    sync
    "$BUSRIG" bench "$url" --json --duration "$DURATION" "$@" >"$out" &
    local bench=$!
    while kill -0 "$bench" 2>/dev/null; do
        r=$(rss_kib "$pid")
        [ "${r:-0}" -gt "$peak" ] && peak=$r
        sleep 0.2
    done
    wait "$bench" || { echo "bench $name failed:" >&2; cat "$out" >&2; exit 1; }
    jq --argjson rss "$peak" '. + {target_rss_kib: $rss}' "$out" >"$out.tmp" && mv "$out.tmp" "$out"
    echo "$out"
}

# name | bench options | jq expression of the figure | unit | goal (busrig/tgtd) | better
workloads=(
    "4k-randread-qd32|--rw randread --bs 4k --qd 32|.total.iops|IOPS|>= 1.5|higher"
    "4k-randwrite-qd32|--rw randwrite --bs 4k --qd 32|.total.iops|IOPS|>= 1.5|higher"
    "1m-read-qd4|--rw read --bs 1M --qd 4|.total.mb_per_sec|MB/s|>= 1.0|higher"
    "1m-write-qd4|--rw write --bs 1M --qd 4|.total.mb_per_sec|MB/s|>= 1.5|higher"
    "4k-read-qd1-p50|--rw randread --bs 4k --qd 1|.total.lat_us.p50|µs p50|<= 0.7|lower"
    "16x32-rss|--rw randread --bs 4k --qd 32 --sessions 16|(.target_rss_kib / 1024)|MiB RSS|busrig <= 64|lower"
)

rows=()
for w in "${workloads[@]}"; do
    IFS='|' read -r name opts expr unit goal better <<<"$w"
    if [ -n "$ONLY" ] && ! grep -qE -- "$ONLY" <<<"$name"; then
        continue
    fi
    echo "running $name ($DURATION s each)" >&2
    # shellcheck disable=SC2086
    t=$(run "tgtd-$name" "$tgt_url" "$tgtd_pid" $opts)
    # shellcheck disable=SC2086
    b=$(run "busrig-$name" "$busrig_url" "$busrig_pid" $opts)
    tv=$(jq -r "$expr" "$t")
    bv=$(jq -r "$expr" "$b")
    ratio=$(awk -v a="$bv" -v b="$tv" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    case "$goal" in
        ">= "*) met=$(awk -v r="$ratio" -v g="${goal#>= }" 'BEGIN { print (r >= g) ? "yes" : "NO" }') ;;
        "<= "*) met=$(awk -v r="$ratio" -v g="${goal#<= }" 'BEGIN { print (r <= g) ? "yes" : "NO" }') ;;
        "busrig <= "*) met=$(awk -v v="$bv" -v g="${goal#busrig <= }" 'BEGIN { print (v <= g) ? "yes" : "NO" }') ;;
    esac
    rows+=("| $name | $(printf '%.1f' "$tv") | $(printf '%.1f' "$bv") | $unit | $ratio | $goal | $met |")
done

echo
echo "duration ${DURATION} s per run, ${SIZE_MIB} MiB backing files, client: busrig bench; ratio = busrig / tgtd"
echo
echo "| workload | tgtd | busrig | unit | ratio | goal | met |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
