#!/usr/bin/env bash
# Side-by-side measurement of heptapod-paas-runner 1.1.1 (the Python
# reference, unmodified, from PyPI) and `paas-runner run` on the SAME
# workload, each against a fresh `paas-runner sim` with the configuration it
# writes (same check_interval, 0.5 s, for both).
#
# Usage: scripts/compare.sh [JOBS]      (default 40 jobs)
#
# The workload has JOBS jobs of flavors XS/S/M/L (40/30/20/10 %) lasting
# 0.5-2.5 s, arriving over 10 s starting 3 s after the simulators start (so
# that neither runner's start-up time counts in the pickup latency), without
# Workhorse long polling (LONG_POLL_MS=2000 to turn it on: only paas-runner
# uses it). Only valid flavors are used: the reference exits its whole
# process when a job requests an unknown flavor.
#
# Figures: wall time, jobs and applications, maximum live weight and pickup
# latency come from the sim's summary; peak RSS (VmHWM) and CPU seconds
# (utime+stime) are read from /proc/<pid> of the runner process (for the
# reference, its python process) just before stopping it with SIGTERM.
# "CPU in children" is the CPU of reaped child processes (the reference runs
# `git` to push deployments; paas-runner pushes in-process).
#
# The issue's workload (many jobs of one duration, all queued at once, with
# room for part of them): DURATION_MS=20000 ROOM=40 CHECK_INTERVAL=1
# POLL_STEP=10 scripts/compare.sh 100 (jobs of the default flavor, arriving
# together after 3 s; ROOM in jobs of that flavor; POLL_STEP is the trace
# watch's poll_step, 0.2 s otherwise, 10 s in heptapod-paas-runner's
# defaults). The summary then also compares the coordinator requests spent
# watching jobs (all but job requests, job updates and the inner runners'
# own calls) per launched job, and the finish-to-delete latency.
#
# Needs python3 (with venv), git and cargo; see scripts/common.sh for knobs.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

JOBS="${1:-40}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [JOBS]  (JOBS: a positive integer)"
LONG_POLL_MS="${LONG_POLL_MS:-0}"
DURATION_MS="${DURATION_MS:-}"
ROOM="${ROOM:-0}"
CHECK_INTERVAL="${CHECK_INTERVAL:-}"
SIM_TIMEOUT=$((120 + 2 * JOBS))   # seconds for the workload to be done
if [[ -n "$DURATION_MS" ]]; then
    [[ "$DURATION_MS" =~ ^[1-9][0-9]*$ ]] || die "DURATION_MS: a positive integer"
    waves=1
    ((ROOM > 0)) && waves=$(((JOBS + ROOM - 1) / ROOM))
    SIM_TIMEOUT=$((SIM_TIMEOUT + 3 * waves * DURATION_MS / 1000))
fi
((ROOM > 0)) && SIM_EXTRA_ARGS+=(--room "$ROOM")
[[ -n "$CHECK_INTERVAL" ]] && SIM_EXTRA_ARGS+=(--check-interval "$CHECK_INTERVAL")
POLL_STEP="${POLL_STEP:-}"
[[ -n "$POLL_STEP" ]] && SIM_EXTRA_ARGS+=(--poll-step "$POLL_STEP")
STOP_GRACE=20                     # seconds for a runner to exit after SIGTERM

setup_work_dir compare
ensure_reference
build_paas_runner

# The workload: counts per flavor, the remainder going to XS.
n_s=$((JOBS * 30 / 100)) n_m=$((JOBS * 20 / 100)) n_l=$((JOBS * 10 / 100))
n_xs=$((JOBS - n_s - n_m - n_l))
WORKLOAD="$WORK_DIR/workload.toml"
if [[ -n "$DURATION_MS" ]]; then
    DESCRIPTION="$JOBS jobs of ${DURATION_MS} ms (default flavor) queued together after 3 s, room $ROOM"
    {
        printf 'seed = 2024\n[sim]\nlong_poll_ms = %d\nrequire_git_credentials = false\n' "$LONG_POLL_MS"
        printf '\n[[jobs]]\ncount = %d\nduration_ms = %d\nstart_after_ms = 3000\n' "$JOBS" "$DURATION_MS"
    } >"$WORKLOAD"
else
    DESCRIPTION="$JOBS jobs (XS $n_xs, S $n_s, M $n_m, L $n_l; 0.5-2.5 s each; arrivals over 10 s after 3 s)"
    {
        printf 'seed = 2024\n[sim]\nlong_poll_ms = %d\nrequire_git_credentials = false\n' "$LONG_POLL_MS"
        for group in "XS $n_xs" "S $n_s" "M $n_m" "L $n_l"; do
            read -r flavor count <<<"$group"
            ((count > 0)) || continue
            printf '\n[[jobs]]\ncount = %d\nflavor = "%s"\nduration_ms = 500\n' "$count" "$flavor"
            printf 'duration_spread_ms = 2000\nstart_after_ms = 3000\nspread_ms = 10000\n'
        done
    } >"$WORKLOAD"
fi
log "workload: $DESCRIPTION, long_poll_ms $LONG_POLL_MS"

FAILURES=()
declare -A R   # R[name.figure]: the figures of each run

# run_one NAME: runs the workload with runner NAME (reference|paas-runner);
# fills R[NAME.*].
run_one() {
    local name=$1 dir="$WORK_DIR/$1" pid ok=yes
    mkdir -p "$dir"
    start_sim "$WORKLOAD" "$dir"
    case $name in
        reference) "$HPR" "$dir/config.toml" >"$dir/runner.log" 2>&1 & ;;
        paas-runner) "$PAAS_RUNNER" run "$dir/config.toml" >"$dir/runner.log" 2>&1 & ;;
    esac
    pid=$!
    track_pid "$pid"
    log "$name: running (pid $pid) against $SIM_URL"

    local timed_out=no
    if ! wait_pid_exit "$SIM_PID" "$SIM_TIMEOUT"; then
        timed_out=yes
    fi
    local runner_alive=yes
    alive "$pid" || runner_alive=no
    local hwm="?" cpu="?" ccpu="?"
    if [[ $runner_alive == yes ]]; then
        read -r hwm cpu ccpu < <(proc_usage "$pid")
    fi
    stop_pid "$pid" "$STOP_GRACE"
    local stop="$STOP_RC after $STOP_SECS s"
    [[ $runner_alive == yes ]] || stop="had exited ($STOP_RC)"
    if [[ $timed_out == yes ]]; then
        stop_pid "$SIM_PID" 10   # the sim prints its summary on SIGTERM
    else
        wait "$SIM_PID" || true
    fi

    S_WALL="?" S_OK="?" S_FAILED="?" S_CREATED="?" S_LEFT="?" S_MAXW="?" S_P50="?" S_P95="?"
    parse_summary "$dir/sim.log" || ok=no
    [[ $timed_out == no ]] || { ok=no; FAILURES+=("$name: workload not done after $SIM_TIMEOUT s"); }
    [[ $runner_alive == yes ]] || { ok=no; FAILURES+=("$name: the runner had exited before the end"); }
    [[ "$S_OK" == "$JOBS" ]] || { ok=no; FAILURES+=("$name: $S_OK of $JOBS jobs succeeded"); }
    [[ "$S_LEFT" == 0 ]] || { ok=no; FAILURES+=("$name: $S_LEFT applications left"); }
    if [[ $ok == no ]]; then
        show_log "$dir/sim.log"
        show_log "$dir/runner.log"
    fi
    log "$name: done (sim: ${S_WALL} s)"

    local rss="?"
    [[ $hwm == "?" ]] || rss="$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
    R[$name.wall]="$S_WALL"
    R[$name.jobs]="$S_OK / $S_FAILED"
    R[$name.apps]="$S_CREATED / $S_LEFT"
    R[$name.maxw]="$S_MAXW"
    R[$name.pickup]="$S_P50 / $S_P95"
    R[$name.rss]="$rss"
    R[$name.cpu]="$cpu"
    R[$name.ccpu]="$ccpu"
    R[$name.stop]="$stop"
    R[$name.watch]="$S_WATCH ($S_WATCH_PER_JOB per job)"
    R[$name.f2d]="$S_F2D_P50 / $S_F2D_P95"
}

run_one reference
run_one paas-runner

row() { printf '%-30s %-28s %-28s\n' "$1" "$2" "$3"; }
echo
echo "compare: $DESCRIPTION, check_interval ${CHECK_INTERVAL:-0.5} s, poll_step ${POLL_STEP:-0.2} s, long_poll_ms $LONG_POLL_MS"
row "" "heptapod-paas-runner $HPR_VERSION" "paas-runner"
row "wall time (s)" "${R[reference.wall]}" "${R[paas-runner.wall]}"
row "jobs succeeded / failed" "${R[reference.jobs]}" "${R[paas-runner.jobs]}"
row "apps created / left" "${R[reference.apps]}" "${R[paas-runner.apps]}"
row "max live weight" "${R[reference.maxw]}" "${R[paas-runner.maxw]}"
row "pickup p50 / p95 (ms)" "${R[reference.pickup]}" "${R[paas-runner.pickup]}"
row "watching requests" "${R[reference.watch]}" "${R[paas-runner.watch]}"
row "finish to delete p50/p95 ms" "${R[reference.f2d]}" "${R[paas-runner.f2d]}"
row "peak RSS (MiB)" "${R[reference.rss]}" "${R[paas-runner.rss]}"
row "CPU user+sys (s)" "${R[reference.cpu]}" "${R[paas-runner.cpu]}"
row "CPU in children (s)" "${R[reference.ccpu]}" "${R[paas-runner.ccpu]}"
row "SIGTERM: exit status" "${R[reference.stop]}" "${R[paas-runner.stop]}"
echo

if ((${#FAILURES[@]})); then
    log "FAILED: $(printf '%s; ' "${FAILURES[@]}")"
    exit 1
fi
