#!/usr/bin/env bash
# Proves the simulators are faithful: runs the UNMODIFIED reference
# implementation, heptapod-paas-runner 1.1.1 from PyPI, against
# `paas-runner sim` and checks that it runs a small workload to the end:
# every job finishes with the expected status and no application is left.
#
# Usage: scripts/reference-check.sh
# Needs python3 (with venv), git and cargo; network access to PyPI the first
# time (the venv is reused afterwards, see scripts/common.sh for knobs).
# Runtime after the build: about 15 s (bounded at ~2.5 min).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

SIM_TIMEOUT=${SIM_TIMEOUT:-120}   # seconds for the workload to be done
STOP_GRACE=20     # seconds for the reference to exit after SIGTERM

setup_work_dir reference-check
ensure_reference
build_paas_runner

# 8 successful jobs of flavors XS/S/M lasting 0.5-2 s, plus one whose script
# fails (the reference must see it finish and decommission its machine).
# No Workhorse long polling, no git credentials required: the reference sends
# none to a plain-http deployment repository.
WORKLOAD="$WORK_DIR/workload.toml"
cat >"$WORKLOAD" <<'EOF'
seed = 11
[sim]
long_poll_ms = 0
require_git_credentials = false

[[jobs]]
count = 3
flavor = "XS"
duration_ms = 500
duration_spread_ms = 500
spread_ms = 1000

[[jobs]]
count = 3
flavor = "S"
duration_ms = 1000
duration_spread_ms = 500
spread_ms = 2000

[[jobs]]
count = 2
flavor = "M"
duration_ms = 1500
duration_spread_ms = 500
spread_ms = 2000

[[jobs]]
count = 1
flavor = "S"
duration_ms = 800
result = "failed"
start_after_ms = 1000
EOF
EXPECT_OK=8
EXPECT_FAILED=1

start_sim "$WORKLOAD" "$WORK_DIR"
log "simulators up: coordinator $SIM_URL"

"$HPR" "$WORK_DIR/config.toml" >"$WORK_DIR/reference.log" 2>&1 &
REF_PID=$!
track_pid "$REF_PID"
log "heptapod-paas-runner $HPR_VERSION started (pid $REF_PID)"

fail() {
    log "FAILED: $*"
    show_log "$WORK_DIR/sim.log"
    show_log "$WORK_DIR/reference.log"
    exit 1
}

if ! wait_pid_exit "$SIM_PID" "$SIM_TIMEOUT"; then
    ref_state=running
    alive "$REF_PID" || ref_state=exited
    stop_pid "$REF_PID" "$STOP_GRACE"
    stop_pid "$SIM_PID" 10   # the sim prints its summary on SIGTERM
    fail "workload not done after ${SIM_TIMEOUT} s (reference $ref_state)"
fi
SIM_RC=0
wait "$SIM_PID" || SIM_RC=$?

REF_WAS_ALIVE=yes
alive "$REF_PID" || REF_WAS_ALIVE=no
read -r REF_HWM REF_CPU REF_CHILD_CPU < <(proc_usage "$REF_PID")
stop_pid "$REF_PID" "$STOP_GRACE"

parse_summary "$WORK_DIR/sim.log" || fail "no summary in the sim's output"

echo
echo "reference check: heptapod-paas-runner $HPR_VERSION against paas-runner sim"
printf '  %-28s %s\n' \
    "wall time (sim)" "$S_WALL s" \
    "jobs" "$S_JOBS: $S_OK succeeded, $S_FAILED failed, $S_CANCELED canceled, $S_PENDING pending, $S_RUNNING running" \
    "applications" "$S_CREATED created, $S_DELETED deleted, $S_LEFT left" \
    "max live weight" "$S_MAXW" \
    "pickup latency" "p50 $S_P50 ms, p95 $S_P95 ms" \
    "reference peak RSS" "$((REF_HWM / 1024)) MiB" \
    "reference CPU" "$REF_CPU s (+ $REF_CHILD_CPU s in git children)" \
    "reference stop (SIGTERM)" "exit status $STOP_RC after $STOP_SECS s"
echo

problems=()
[[ "$SIM_RC" == 0 ]] || problems+=("sim exited with status $SIM_RC")
[[ "$REF_WAS_ALIVE" == yes ]] || problems+=("the reference had exited before the end")
[[ "$S_JOBS" == $((EXPECT_OK + EXPECT_FAILED)) ]] || problems+=("$S_JOBS jobs, expected $((EXPECT_OK + EXPECT_FAILED))")
[[ "$S_OK" == "$EXPECT_OK" ]] || problems+=("$S_OK jobs succeeded, expected $EXPECT_OK")
[[ "$S_FAILED" == "$EXPECT_FAILED" ]] || problems+=("$S_FAILED jobs failed, expected $EXPECT_FAILED")
[[ "$S_LEFT" == 0 ]] || problems+=("$S_LEFT applications left")
[[ "$S_CREATED" == "$S_JOBS" ]] || problems+=("$S_CREATED applications created for $S_JOBS jobs")
if ((${#problems[@]})); then
    fail "$(printf '%s; ' "${problems[@]}")"
fi
if [[ "$STOP_RC" != 0 ]]; then
    log "note: the reference did not exit 0 on SIGTERM ($STOP_RC)"
fi
log "OK: the reference ran every job against the simulators and left no application"
