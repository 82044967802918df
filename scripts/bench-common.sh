# Shared by scripts/compare-tgt.sh and scripts/compare-limits.sh (sourced,
# not run): their options, the busrig binary, a free port, a process
# started with a readiness line, and a `busrig target` with one LUN.

# parse_options SCRIPT ARGS...: sets DURATION, SIZE_MIB, BUSRIG, KEEP and
# ONLY from --duration, --size, --busrig, --keep and --only; --help
# prints the comment block at the top of the script, without its "# ".
parse_options() {
    local script=$1
    shift
    DURATION=10
    SIZE_MIB=1024
    BUSRIG=""
    KEEP=0
    ONLY=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --duration) DURATION=$2; shift 2 ;;
            --size) SIZE_MIB=$2; shift 2 ;;
            --busrig) BUSRIG=$2; shift 2 ;;
            --only) ONLY=$2; shift 2 ;;
            --keep) KEEP=1; shift ;;
            -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
            *) echo "$script: unknown option $1" >&2; exit 1 ;;
        esac
    done
}

# ensure_busrig ROOT: without --busrig, builds the release binary of the
# checkout at ROOT and points BUSRIG at it.
ensure_busrig() {
    if [ -z "$BUSRIG" ]; then
        local target_dir=${CARGO_TARGET_DIR:-$1/target}
        (cd "$1" && cargo build --release --quiet)
        BUSRIG=$target_dir/release/busrig
    fi
}

# free_port: a loopback TCP port nothing listens on now.
free_port() {
    local p
    while :; do
        p=$(( (RANDOM << 15 | RANDOM) % 30000 + 20000 ))
        if ! ss -ltnH "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
}

# start_ready FIFO PREFIX CMD...: starts CMD in the background with its
# stdout on FIFO and waits for its readiness line, the one starting with
# PREFIX; CMD's pid is left in $started and the rest of the line in
# $ready. Its stdout keeps being drained so it never blocks on the pipe.
start_ready() {
    local fifo=$1 prefix=$2 line
    ready=""
    shift 2
    mkfifo "$fifo"
    "$@" >"$fifo" 2>"$fifo.log" &
    started=$!
    while read -r line; do
        case "$line" in
            "$prefix"*) ready=${line#"$prefix"}; break ;;
        esac
    done <"$fifo"
    if [ -z "$ready" ]; then
        echo "did not start: $*" >&2
        cat "$fifo.log" >&2
        exit 1
    fi
    cat "$fifo" >/dev/null &
}

# start_busrig_target WORK IMAGE: `busrig target` on a free loopback port
# with IMAGE ($SIZE_MIB MiB) as LUN 1; sets busrig_pid and busrig_url.
start_busrig_target() {
    local work=$1 image=$2 addr
    cat >"$work/busrig.toml" <<TOML
[[target]]
name = "iqn.2026-11.io.busrig.compare:busrig"
[[target.lun]]
id = 1
path = "$image"
size = "${SIZE_MIB}MiB"
TOML
    start_ready "$work/busrig.ready" "busrig target listening on " \
        env RUST_LOG=warn "$BUSRIG" target --config "$work/busrig.toml" --data-dir "$work" \
        --listen 127.0.0.1:0 --control 127.0.0.1:0
    busrig_pid=$started
    # The readiness line carries the chosen port.
    addr=$ready
    busrig_url="iscsi://$addr/iqn.2026-11.io.busrig.compare:busrig/1"
}
