#!/usr/bin/env bash
# Check the deployment on a real systemd: boot a Debian 12 container (systemd-nspawn, its own
# network namespace) and do in it what the README's "Deployment" section tells an installer to do,
# with the unit's whole sandbox. Each step prints PASS or FAIL; the exit status is the number
# of FAILs (125: the check could not run). Not part of `make test` (it takes minutes and root); run it after touching deploy/,
# the CLI or the reload path.
#
#   sudo deploy/container-check.sh [--keep]      (--keep: leave the container running at the end)
#   sudo DEBIAN_SUITE=trixie deploy/container-check.sh    (Debian 13: Python 3.13, systemd 257)
#   --tests: then also run the main test suite in the container, on its Python
#
# The root file system is made once by debootstrap in $EDGE_AGENT_CONTAINER.base
# (default /var/tmp/edge-agent-container-SUITE.base) and kept; each run boots a fresh copy of it
# in $EDGE_AGENT_CONTAINER. The project and its dependencies go in as
# wheels built here, so the container needs no network. Needs root, Debian's systemd-container
# and debootstrap (installed if missing) and python3 with pip (any version: the wheels are
# fetched for the container's).
#
# Steps: install.sh install (first install, not started) -> start (Type=notify, READY) -> an
# event on MQTT -> systemctl reload: an applied edit, a file with an unknown key, a key that takes
# a restart -> a second agent on the same state_dir refused -> a rename: the warning's forget
# command empties the old name, and an online device is refused -> install.sh install again (the
# upgrade) -> systemctl stop: status offline, no PID left.
set -uo pipefail

SUITE=${DEBIAN_SUITE:-bookworm}
ROOT=${EDGE_AGENT_CONTAINER:-/var/tmp/edge-agent-container-$SUITE}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
keep=0
tests=0
for arg in "$@"; do
    case $arg in
        --keep) keep=1 ;;
        --tests) tests=1 ;;
        *) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2; exit 125 ;;
    esac
done
# Exit 125: the check could not run (not root, no mirror, a container still running...).
unable() { echo "container-check: $*" >&2; exit 125; }
[ "$(id -u)" = 0 ] || unable "run as root"
# One run per root; the lock is inherited by systemd-nspawn, so a container left running with
# --keep holds it too.
exec 9>"$ROOT.lock"
flock -n 9 || unable "$ROOT is in use by another run or a container left running (--keep)"

fails=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; fails=$((fails + 1)); }
check() {  # check "what" command...: PASS if the command succeeds
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
say() { printf '==> %s\n' "$*"; }

for tool in systemd-nspawn:systemd-container debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || apt-get install -y -qq "${tool##*:}" >/dev/null
done

BASE=$ROOT.base
packages=systemd,systemd-sysv,dbus,python3,python3-venv,mosquitto,mosquitto-clients,ca-certificates,adduser
packages+=,openssl,gcc,libc6-dev,shellcheck  # what the tests use
stamp="$SUITE $packages"
# Made aside and moved into place when complete, with what it was made from: an interrupted
# debootstrap or an older package list is made again.
if [ "$(cat "$BASE/.edge-agent-base" 2>/dev/null)" != "$stamp" ]; then
    say "debootstrap $SUITE into $BASE (once; a few minutes)"
    rm -rf "$BASE" "$BASE.partial"
    debootstrap --variant=minbase --include="$packages" "$SUITE" "$BASE.partial" "$MIRROR" >/dev/null ||
        { rm -rf "$BASE.partial"; unable "debootstrap $SUITE from $MIRROR failed"; }
    echo "$stamp" >"$BASE.partial/.edge-agent-base"
    mv "$BASE.partial" "$BASE"
fi
say "a fresh box in $ROOT (a copy of $BASE)"
rm -rf "$ROOT" && cp -a "$BASE" "$ROOT"

py=$(chroot "$ROOT" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
say "the project and its dependencies as wheels for the container's Python $py (no network in it)"
rm -rf "$ROOT/root/wheels" "$ROOT/root/edge-agent"
mkdir -p "$ROOT/root/edge-agent"
# The committed tree, for the wheel and the install alike (uncommitted edits are not checked).
git -C "$SRC" archive HEAD | tar -x -C "$ROOT/root/edge-agent"
wheels=$ROOT/root/wheels
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$wheels" "$ROOT/root/edge-agent" 2>/dev/null &&
    "$PYTHON" -m pip download -q --dest "$wheels" --only-binary=:all: --python-version "$py" \
        --platform "manylinux_2_28_$(uname -m)" --platform "manylinux_2_27_$(uname -m)" \
        --platform "manylinux_2_17_$(uname -m)" --platform "manylinux2014_$(uname -m)" \
        "$(echo "$wheels"/edge_agent-*.whl)[test]" 'setuptools>=68' wheel 2>/dev/null ||
    unable "pip wheel/download for Python $py failed"

# systemd-nspawn refuses to clean up its propagation folder where /run is not a tmpfs.
mounted=0
if [ "$(findmnt -n -o FSTYPE /run 2>/dev/null)" != tmpfs ] && ! findmnt /run/systemd/nspawn >/dev/null; then
    mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && mounted=1
fi

say "boot the container"
systemd-nspawn --quiet --keep-unit --register=no --private-network --console=passive -D "$ROOT" --boot \
    >"$ROOT.log" 2>&1 &
nspawn=$!
leader=""
cleanup() {
    if [ "$keep" = 1 ]; then
        say "left running: nsenter -t $leader -a bash   (stop it: kill $nspawn)"
    else
        kill "$nspawn" 2>/dev/null; wait "$nspawn" 2>/dev/null
        [ "$mounted" = 0 ] || umount /run/systemd/nspawn
    fi
}
trap cleanup EXIT
inside() { nsenter -t "$leader" -a "$@"; }
for _ in $(seq 200); do
    leader=$(pgrep -P "$nspawn" | head -1)
    if [ -n "$leader" ]; then
        case $(inside systemctl is-system-running 2>/dev/null) in running | degraded) break ;; esac
    fi
    sleep 0.3
done
[ -n "$leader" ] || unable "the container did not boot ($ROOT.log)"

conf=/etc/edge-agent/config.yaml
agent=/opt/edge-agent/venv/bin/edge-agent
run_install() { inside env PIP_NO_INDEX=1 PIP_FIND_LINKS=/root/wheels bash -c 'cd /root/edge-agent && deploy/install.sh install' >/dev/null 2>&1; }
journal() { inside journalctl -u edge-agent --no-pager -o cat; }
# grep reads a captured text, not a pipe: with pipefail, grep -q quitting early would fail the writer.
logged() { grep -q -- "$1" <<<"$(journal)"; }
active() { inside systemctl is-active -q edge-agent; }
wait_for() {  # wait_for SECONDS command...
    local until=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -ge $until ] && return 1; sleep 0.5; done
}

say "install"
run_install
installed_stopped() { inside test -f "$conf" && ! active && inside systemctl is-enabled -q edge-agent; }
check "install.sh install writes the config, enables the service and does not start it" installed_stopped
inside systemctl start edge-agent
check "systemctl start returns once the agent said READY, and it runs" active
event_seen() { inside mosquitto_sub -h 127.0.0.1 -t 'edge/edge-1/+/event' -C 1 -W 90 >/dev/null; }
check "an event reaches the broker (edge/edge-1/+/event)" event_seen

say "systemctl reload"
reload() { inside systemctl reload edge-agent 2>/dev/null; }
sighups() { grep -c 'received SIGHUP' <<<"$(journal)"; }
inside sed -i 's/^      on_threshold: 6.0 /      on_threshold: 7.0 /' "$conf"
# journald writes asynchronously: what the agent logged may come just after the command returned.
applied() { reload && wait_for 5 logged 'reloaded and applied'; }
check "an edit: systemctl reload succeeds once the agent has applied it" applied
inside bash -c "echo 'unknown_key: 1' >> $conf"
refused_file() { ! reload && [ "$(sighups)" = 1 ]; }
check "a file with an unknown key: systemctl reload fails and the agent never sees it" refused_file
inside sed -i '/^unknown_key: 1$/d' "$conf"
inside sed -i 's/^device_id: edge-1/device_id: edge-2/' "$conf"
needs_restart() { ! reload && active && wait_for 5 logged 'device_id: changed in the file; it takes a restart'; }
check "a new device_id: systemctl reload fails ('takes a restart') and the agent runs on" needs_restart
second_refused() {
    # bounded: were the lock broken, the second agent would run on
    grep -q 'is in use by another edge-agent' <<<"$(inside timeout 30 runuser -u edge-agent -- "$agent" run --config "$conf" 2>&1)"
}
check "a second agent on the same state_dir is refused" second_refused

say "rename"
inside systemctl restart edge-agent
warned() { logged 'empty them: edge-agent forget edge-1'; }
check "the renamed box logs how to forget its old name" wait_for 30 warned
read -ra forget_words <<<"$(journal | sed -n 's/.*empty them: edge-agent \(forget edge-1 [^[]*\) \[broker.*/\1/p' | tail -1)"
forgot() { grep -q 'device edge-1: .* emptied' <<<"$(inside "$agent" "${forget_words[@]}")"; }
check "that command empties edge-1's retained topics" forgot
online_refused() { grep -q 'device edge-2 says it is online' <<<"$(inside "$agent" forget edge-2 --host 127.0.0.1 --port 1883 2>&1)"; }
check "forget refuses the device that runs (edge-2 says online)" online_refused

say "upgrade"
before=$(inside readlink /opt/edge-agent/venv)
sleep 1  # a venv's name has the time in seconds
run_install
after=$(inside readlink /opt/edge-agent/venv)
upgraded() { [ "$before" != "$after" ] && active && ! inside test -e "/opt/edge-agent/$before"; }
check "install.sh install again: a new venv, the service restarted on it, the old one removed" upgraded

say "stop"
inside systemctl stop edge-agent
stopped() {
    [ "$(inside mosquitto_sub -h 127.0.0.1 -t edge/edge-2/status -C 1 -W 5)" = offline ] &&
        [ ! -s "$ROOT/var/lib/edge-agent/agent.pid" ]
}
check "after systemctl stop: status offline (retained) and no PID left in state_dir" stopped

if [ "$tests" = 1 ]; then
    say "the test suite in the container (a few minutes)"
    inside bash -c 'python3 -m venv /root/test-venv && cd /root/edge-agent &&
        PIP_NO_INDEX=1 PIP_FIND_LINKS=/root/wheels /root/test-venv/bin/pip install -q -e ".[test]"' >/dev/null 2>&1
    log=$ROOT.tests.log
    suite() { inside bash -c 'cd /root/edge-agent && /root/test-venv/bin/python -m pytest -q -p no:cacheprovider' >"$log" 2>&1; }
    check "the main test suite passes on the container's Python $py ($log)" suite
    say "$(tail -1 "$log")"
fi

say "$fails failure(s)"
exit "$fails"
