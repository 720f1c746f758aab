# shellcheck shell=bash disable=SC2034  # globals set here are read by callers
# Helpers shared by scripts/reference-check.sh and scripts/compare.sh.
# Source it; it defines functions and variables only.
#
# Environment knobs:
#   PAAS_RUNNER_BIN   use this paas-runner binary instead of building one
#   CARGO_TARGET_DIR  where cargo builds (default: <repo>/target)
#   PYTHON            interpreter for the venv (default: python3)
#   HPR_VENV          venv of heptapod-paas-runner 1.1.1
#                     (default: ${TMPDIR:-/tmp}/heptapod-paas-runner-1.1.1-venv)
#   KEEP_WORK=1       keep the temporary work directory (logs, configs)

export LC_ALL=C
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HPR_VERSION=1.1.1
HPR_VENV="${HPR_VENV:-${TMPDIR:-/tmp}/heptapod-paas-runner-${HPR_VERSION}-venv}"
PYTHON="${PYTHON:-python3}"

# Extra arguments of `paas-runner sim` (set by callers).
SIM_EXTRA_ARGS=()

# PIDs of the background processes we started (cleaned up by cleanup_all).
_BG_PIDS=()
WORK_DIR=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Creates the work directory and installs the cleanup trap.
setup_work_dir() {
    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    trap cleanup_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops every process we started that is still alive, then removes the work
# directory (unless KEEP_WORK=1).
cleanup_all() {
    local pid
    for pid in "${_BG_PIDS[@]}"; do
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${_BG_PIDS[@]}"; do
        stop_pid "$pid" 10 2>/dev/null || true
    done
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        if [[ "${KEEP_WORK:-0}" == 1 ]]; then
            log "work directory kept: $WORK_DIR"
        else
            rm -rf "$WORK_DIR"
        fi
    fi
}

# elapsed_since T0: seconds since T0 (an $EPOCHREALTIME value), 1 decimal.
elapsed_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

track_pid() { _BG_PIDS+=("$1"); }

# Builds paas-runner (incremental) and sets PAAS_RUNNER.
build_paas_runner() {
    if [[ -n "${PAAS_RUNNER_BIN:-}" ]]; then
        PAAS_RUNNER="$PAAS_RUNNER_BIN"
        [[ -x "$PAAS_RUNNER" ]] || die "PAAS_RUNNER_BIN=$PAAS_RUNNER is not executable"
        log "using $PAAS_RUNNER (PAAS_RUNNER_BIN, not rebuilt)"
        return
    fi
    log "building paas-runner (cargo build --release -p paas-runner)"
    (cd "$REPO_ROOT" && cargo build --release -p paas-runner) >&2 \
        || die "cargo build failed"
    PAAS_RUNNER="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/paas-runner"
    [[ -x "$PAAS_RUNNER" ]] || die "no binary at $PAAS_RUNNER"
}

_venv_ok() {
    [[ -x "$HPR_VENV/bin/heptapod-paas-runner" ]] &&
        "$HPR_VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('heptapod-paas-runner') != '$HPR_VERSION')" 2>/dev/null
}

# Creates (or reuses) the venv with heptapod-paas-runner==1.1.1 and sets HPR.
ensure_reference() {
    mkdir -p "$(dirname "$HPR_VENV")"
    # Serialize concurrent creations when flock is available.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$HPR_VENV.lock"
        flock 9
    fi
    if _venv_ok; then
        log "reusing venv $HPR_VENV"
    else
        log "creating venv $HPR_VENV and installing heptapod-paas-runner==$HPR_VERSION"
        rm -rf "$HPR_VENV"
        "$PYTHON" -m venv "$HPR_VENV" >&2 || die "$PYTHON -m venv failed"
        "$HPR_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "heptapod-paas-runner==$HPR_VERSION" >&2 \
            || die "pip install heptapod-paas-runner==$HPR_VERSION failed"
        _venv_ok || die "heptapod-paas-runner $HPR_VERSION not usable in $HPR_VENV"
    fi
    if command -v flock >/dev/null 2>&1; then
        flock -u 9
        exec 9>&-
    fi
    HPR="$HPR_VENV/bin/heptapod-paas-runner"
}

# start_sim WORKLOAD DIR: starts `paas-runner sim` writing DIR/config.toml
# (state file DIR/state.json) and logging to DIR/sim.log; waits until the
# configuration is written. Sets SIM_PID and SIM_URL.
start_sim() {
    local workload=$1 dir=$2 i
    "$PAAS_RUNNER" sim --workload "$workload" --write-config "$dir/config.toml" \
        --state-file "$dir/state.json" --listen-address '' --exit-when-done "${SIM_EXTRA_ARGS[@]}" \
        >"$dir/sim.log" 2>&1 &
    SIM_PID=$!
    track_pid "$SIM_PID"
    for ((i = 0; i < 300; i++)); do
        if grep -q '^workload:' "$dir/sim.log" 2>/dev/null; then
            break
        fi
        alive "$SIM_PID" || { show_log "$dir/sim.log"; die "sim exited at start"; }
        sleep 0.1
    done
    grep -q '^workload:' "$dir/sim.log" || { show_log "$dir/sim.log"; die "sim did not start in 30 s"; }
    SIM_URL="$(sed -n 's/^coordinator url: *//p' "$dir/sim.log" | head -n1)"
    [[ -n "$SIM_URL" && -s "$dir/config.toml" ]] || { show_log "$dir/sim.log"; die "no coordinator URL or configuration"; }
}

# alive PID: whether PID runs (an exited child not yet reaped is a zombie,
# which `kill -0` still finds).
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# wait_pid_exit PID SECONDS: waits for PID to end; status 1 on timeout.
wait_pid_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
    return 0
}

# stop_pid PID GRACE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
# Reaps the child and sets STOP_RC to its exit status (or "killed") and
# STOP_SECS to the seconds it took to exit. Not in a subshell: `wait` only
# knows this shell's children.
stop_pid() {
    local pid=$1 grace=$2 t0=$EPOCHREALTIME
    STOP_RC=0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_pid_exit "$pid" "$grace"; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            STOP_RC=killed
            STOP_SECS="$(elapsed_since "$t0")"
            return 0
        fi
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    STOP_SECS="$(elapsed_since "$t0")"
}

# proc_usage PID: prints "VmHWM_kB cpu_seconds children_cpu_seconds" of a
# live process (children: waited-for child processes, e.g. git).
proc_usage() {
    local pid=$1 hwm stat fields tck
    hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || { echo "? ? ?"; return; }
    # Fields after the command name, which may hold spaces: field 3 is first.
    fields="${stat##*) }"
    tck="$(getconf CLK_TCK)"
    # shellcheck disable=SC2086
    set -- $fields
    # utime, stime, cutime, cstime are fields 14..17, i.e. $12..$15 here.
    awk -v u="${12}" -v s="${13}" -v cu="${14}" -v cs="${15}" -v t="$tck" -v h="${hwm:-?}" \
        'BEGIN { printf "%s %.2f %.2f\n", h, (u + s) / t, (cu + cs) / t }'
}

# parse_summary SIMLOG: sets S_WALL S_JOBS S_OK S_FAILED S_CANCELED S_PENDING
# S_RUNNING S_CREATED S_DELETED S_LEFT S_MAXW S_P50 S_P95 from the sim's
# summary lines (and S_WATCH S_WATCH_PER_JOB S_F2D_P50 S_F2D_P95, "?" when
# the sim does not print them); status 1 if they are missing.
parse_summary() {
    local log=$1 line1 line2
    line1="$(grep -E '^after [0-9.]+ s: ' "$log" | tail -n1)"
    line2="$(grep -E '^applications: ' "$log" | tail -n1)"
    [[ -n "$line1" && -n "$line2" ]] || return 1
    read -r S_WALL S_JOBS S_OK S_FAILED S_CANCELED S_PENDING S_RUNNING < <(
        sed -E 's/^after ([0-9.]+) s: ([0-9]+) jobs, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) canceled, ([0-9]+) pending, ([0-9]+) running.*/\1 \2 \3 \4 \5 \6 \7/' <<<"$line1")
    read -r S_CREATED S_DELETED S_LEFT S_MAXW S_P50 S_P95 < <(
        sed -E 's/^applications: ([0-9]+) created, ([0-9]+) deleted, ([0-9]+) left; max weight ([0-9.]+); pickup p50 ([0-9]+) ms p95 ([0-9]+) ms.*/\1 \2 \3 \4 \5 \6/' <<<"$line2")
    local line3
    line3="$(grep -E '^watching: ' "$log" | tail -n1)"
    S_WATCH="?" S_WATCH_PER_JOB="?" S_F2D_P50="?" S_F2D_P95="?"
    if [[ -n "$line3" ]]; then
        read -r S_WATCH S_WATCH_PER_JOB S_F2D_P50 S_F2D_P95 < <(
            sed -E 's/^watching: ([0-9]+) requests spent watching jobs, ([0-9.]+) per launched job; finish to delete p50 ([0-9]+) ms p95 ([0-9]+) ms.*/\1 \2 \3 \4/' <<<"$line3")
    fi
    [[ "$S_RUNNING" =~ ^[0-9]+$ && "$S_P95" =~ ^[0-9]+$ ]]
}

# show_log FILE: the last 50 lines of FILE, framed.
show_log() {
    echo "----- last 50 lines of $1 -----" >&2
    tail -n 50 "$1" >&2 2>/dev/null || true
    echo "----- end of $1 -----" >&2
}
