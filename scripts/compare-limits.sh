#!/usr/bin/env bash
# busrig target against the machine's limits, in one run: each workload
# through `busrig target` over iSCSI on loopback, and the same workload by
# the same client (`busrig bench file:///...`) on a local file with the
# same data and no network; plus loopback TCP bandwidth (iperf3, one
# stream, 1 MiB writes).
#
#   scripts/compare-limits.sh [--duration SECS] [--size MIB] [--busrig PATH]
#                             [--only PATTERN] [--keep]
#
# Prints each busrig figure as a fraction of the local-file figure and,
# for the bandwidth workloads, of the iperf3 figure; a fraction is
# busrig / reference for rates and reference / busrig for latencies, so
# 1.0 is "as fast as the reference" either way. The goal column is that
# of issue 20 (1 MiB sequential reads and writes at 0.8 of loopback TCP).
# Needs jq and iperf3 (apt-get install -y jq iperf3); without iperf3 the
# TCP columns say so and stay empty. --only runs just the workloads whose
# name matches the grep -E PATTERN. The bench's JSON of every run is kept
# in the work folder with --keep. The load average before and after the
# run is printed with the table: on a shared machine it says how far the
# figures are from an idle one.
set -euo pipefail

. "$(dirname "$0")/bench-common.sh"
parse_options compare-limits.sh "$@"

if ! command -v jq >/dev/null; then
    echo "compare-limits.sh: jq not found (apt-get install -y jq)" >&2
    exit 1
fi
have_iperf=1
if ! command -v iperf3 >/dev/null; then
    echo "compare-limits.sh: iperf3 not found (apt-get install -y iperf3): no TCP reference in this run" >&2
    have_iperf=0
fi

root=$(cd "$(dirname "$0")/.." && pwd)
ensure_busrig "$root"

# Same file system as the checkout, for the target's LUN and the local file.
work=$(mktemp -d "$root/.compare-limits.XXXXXX")
busrig_pid=""
iperf_pid=""
cleanup() {
    [ -n "$busrig_pid" ] && kill "$busrig_pid" 2>/dev/null && wait "$busrig_pid" 2>/dev/null || true
    [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null && wait "$iperf_pid" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "backing files: 2 x $SIZE_MIB MiB of random data in $work" >&2
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/local.img"
cp "$work/local.img" "$work/busrig.img"
# Both start fully in the page cache, so neither pays for the first reads.
cat "$work/local.img" "$work/busrig.img" >/dev/null

# --- loopback TCP: iperf3, one stream, 1 MiB writes ------------------------
tcp_mbps=""
if [ "$have_iperf" = 1 ]; then
    # Port 0 is not an iperf3 choice: take a free one.
    p=$(free_port)
    echo "running iperf3 ($DURATION s)" >&2
    start_ready "$work/iperf.out" "Server listening on " \
        iperf3 --server --bind 127.0.0.1 --port "$p" --one-off --forceflush
    iperf_pid=$started
    iperf3 --client 127.0.0.1 --port "$p" --parallel 1 --len 1M --time "$DURATION" --json >"$work/iperf3.json"
    wait "$iperf_pid" 2>/dev/null || true
    iperf_pid=""
    tcp_mbps=$(jq -r '.end.sum_received.bits_per_second / 8 / 1e6' "$work/iperf3.json")
fi

# --- busrig target ----------------------------------------------------------
start_busrig_target "$work" "$work/busrig.img"
file_url="file://$work/local.img"

# run NAME URL ARGS...: one bench run; prints its JSON file.
run() {
    local name=$1 url=$2
    shift 2
    local out="$work/$name.json"
    # Dirty pages of an earlier write run are written back now, not by
    # the kernel's flusher in the middle of this run.
    sync
    "$BUSRIG" bench "$url" --json --duration "$DURATION" "$@" >"$out" \
        || { echo "bench $name failed:" >&2; cat "$out" >&2; exit 1; }
    echo "$out"
}

# name | bench options | jq expression of the figure | unit | better | TCP goal
workloads=(
    "4k-randread-qd32|--rw randread --bs 4k --qd 32|.total.iops|IOPS|higher|"
    "4k-randwrite-qd32|--rw randwrite --bs 4k --qd 32|.total.iops|IOPS|higher|"
    "1m-read-qd4|--rw read --bs 1M --qd 4|.total.mb_per_sec|MB/s|higher|>= 0.8"
    "1m-write-qd4|--rw write --bs 1M --qd 4|.total.mb_per_sec|MB/s|higher|>= 0.8"
    "4k-read-qd1-p50|--rw randread --bs 4k --qd 1|.total.lat_us.p50|µs p50|lower|"
)

# fraction BUSRIG REFERENCE BETTER: busrig's figure as a fraction of the reference.
fraction() {
    awk -v b="$1" -v r="$2" -v better="$3" 'BEGIN {
        if (r == "" || b <= 0 || r <= 0) { print "-"; exit }
        printf "%.2f", (better == "lower") ? r / b : b / r }'
}

rows=()
for w in "${workloads[@]}"; do
    IFS='|' read -r name opts expr unit better goal <<<"$w"
    if [ -n "$ONLY" ] && ! grep -qE -- "$ONLY" <<<"$name"; then
        continue
    fi
    echo "running $name ($DURATION s each)" >&2
    # shellcheck disable=SC2086
    f=$(run "file-$name" "$file_url" $opts)
    # shellcheck disable=SC2086
    b=$(run "busrig-$name" "$busrig_url" $opts)
    fv=$(jq -r "$expr" "$f")
    bv=$(jq -r "$expr" "$b")
    of_file=$(fraction "$bv" "$fv" "$better")
    tcp="-" of_tcp="-" met="-"
    if [ "$unit" = "MB/s" ] && [ -n "$tcp_mbps" ]; then
        tcp=$(printf '%.0f' "$tcp_mbps")
        of_tcp=$(fraction "$bv" "$tcp_mbps" higher)
    fi
    if [ -n "$goal" ]; then
        met=$(awk -v r="$of_tcp" -v g="${goal#>= }" 'BEGIN { print (r != "-" && r >= g) ? "yes" : "NO" }')
        goal="$goal of TCP"
    else
        goal="-"
    fi
    rows+=("| $name | $(printf '%.1f' "$fv") | $(printf '%.1f' "$bv") | $unit | $of_file | $tcp | $of_tcp | $goal | $met |")
done

echo
echo "duration ${DURATION} s per run, ${SIZE_MIB} MiB files, client: busrig bench, $(nproc) CPUs"
echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$tcp_mbps" ]; then
    echo "loopback TCP (iperf3, 1 stream, 1 MiB writes): $(printf '%.0f' "$tcp_mbps") MB/s"
fi
echo
echo "| workload | local file | busrig | unit | of file | TCP MB/s | of TCP | goal | met |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
