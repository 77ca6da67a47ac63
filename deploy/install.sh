#!/usr/bin/env bash
# Install, upgrade or remove edge-agent as a systemd service on Debian 12 / Raspberry Pi OS
# (bookworm; Python 3.11+). Run from a checkout of the repository, as root.
#
#   deploy/install.sh [--dry-run] [--no-start] install     install, or upgrade in place
#   deploy/install.sh [--dry-run] uninstall [--purge]      remove the service and the venv;
#                                                          --purge also removes config and state
#   deploy/install.sh --help                               this text (exit 0; a wrong argument: exit 2)
#
# Install is idempotent, and is also the upgrade: a new venv is built beside the running one
# (/opt/edge-agent/venv-TIMESTAMP) and the /opt/edge-agent/venv link is switched to it only once
# it is complete (a venv cannot be moved: its scripts name their own path) and the new version's
# `edge-agent check-config` accepts the existing config (if it does not, the new venv is removed
# and the running service is left as it was); /etc/edge-agent (config, password, TLS files) and
# /var/lib/edge-agent (calibration, event seq, outbox) are never overwritten; the service is
# restarted, and only then are the old venvs removed (with --no-start they stay). A first
# install writes the example config and does not start: set the cameras and the broker first.
# --dry-run prints every step and changes nothing. EDGE_AGENT_PREFIX, EDGE_AGENT_CONF_DIR and
# EDGE_AGENT_STATE_DIR move the three folders (for a staging tree; the unit names the defaults).
set -euo pipefail

PREFIX=${EDGE_AGENT_PREFIX:-/opt/edge-agent}
VENV=$PREFIX/venv
CONF_DIR=${EDGE_AGENT_CONF_DIR:-/etc/edge-agent}
STATE_DIR=${EDGE_AGENT_STATE_DIR:-/var/lib/edge-agent}
UNIT=/etc/systemd/system/edge-agent.service
USER_NAME=edge-agent
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

dry_run=0
start=1
purge=0
action=""

# The comment block at the top, then exit with $1: 0 when asked for (--help), 2 on a usage error.
usage() {
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
    exit "$1"
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --no-start) start=0 ;;
        --purge) purge=1 ;;
        install | uninstall) action=$1 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done
[ -n "$action" ] || usage 2

say() { printf '==> %s\n' "$*"; }

# Run a command, or only print it under --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

need_root() {
    if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        echo "run as root (or with --dry-run to see what would be done)" >&2
        exit 1
    fi
}

do_install() {
    need_root
    [ -f "$SRC/pyproject.toml" ] || { echo "$SRC is not an edge-agent checkout" >&2; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        { echo "Python 3.11 or newer is needed (Debian 12 / Raspberry Pi OS bookworm)" >&2; exit 1; }

    say "system packages"
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        run apt-get update -qq
        run apt-get install -y -qq python3-venv
    else
        say "python3-venv present"
    fi

    say "user $USER_NAME (system, groups video)"
    if id -u "$USER_NAME" >/dev/null 2>&1; then
        say "user $USER_NAME exists"
    else
        run adduser --system --group --no-create-home --home "$STATE_DIR" "$USER_NAME"
    fi
    run usermod -a -G video "$USER_NAME"

    release=venv-$(date +%Y%m%d%H%M%S)
    say "venv $PREFIX/$release from $SRC, linked as $VENV"
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv "$PREFIX/$release"
    run "$PREFIX/$release/bin/python" -m pip install --quiet --upgrade pip
    run "$PREFIX/$release/bin/python" -m pip install --quiet "$SRC"
    if [ -e "$CONF_DIR/config.yaml" ]; then
        say "upgrade: the new version checks the existing config before anything is switched"
        if ! run "$PREFIX/$release/bin/edge-agent" check-config "$CONF_DIR/config.yaml"; then
            run rm -rf "${PREFIX:?}/$release"
            echo "the new version refuses $CONF_DIR/config.yaml (above): nothing was changed, the service runs on" >&2
            exit 1
        fi
    fi
    # Switch the link atomically (rename over it); the old releases go once the service restarted.
    run ln -sfn "$release" "$VENV.link"
    run mv -T "$VENV.link" "$VENV"
    run install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
    run install -m 0755 "$SRC/deploy/mosquitto/make-certs.sh" "$PREFIX/make-certs.sh"

    say "config $CONF_DIR, state $STATE_DIR"
    run install -d -m 0750 -o root -g "$USER_NAME" "$CONF_DIR"
    first_install=0
    if [ -e "$CONF_DIR/config.yaml" ]; then
        say "keeping existing $CONF_DIR/config.yaml"
    elif [ "$dry_run" = 1 ]; then
        first_install=1
        printf '+ %s\n' "write $CONF_DIR/config.yaml from $SRC/config.yaml with state_dir: $STATE_DIR"
    else
        sed "s#^state_dir: .*#state_dir: $STATE_DIR#" "$SRC/config.yaml" >"$CONF_DIR/config.yaml.new"
        chown "root:$USER_NAME" "$CONF_DIR/config.yaml.new"
        chmod 0640 "$CONF_DIR/config.yaml.new"
        mv "$CONF_DIR/config.yaml.new" "$CONF_DIR/config.yaml"
        first_install=1
    fi
    run install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"

    say "systemd unit $UNIT"
    run install -m 0644 "$SRC/deploy/edge-agent.service" "$UNIT"
    run systemctl daemon-reload
    run systemctl enable edge-agent.service
    if [ "$first_install" = 1 ]; then
        say "first install: edit $CONF_DIR/config.yaml (cameras, broker, TLS), then:"
        say "  $VENV/bin/edge-agent check-config $CONF_DIR/config.yaml && systemctl start edge-agent"
    elif [ "$start" = 1 ]; then
        run systemctl restart edge-agent.service  # onto the new venv (its config checked above)
        say "started; follow it with: journalctl -u edge-agent -f"
        # Nothing runs from the old releases now. (Not after --no-start: the service may.)
        for old in "$PREFIX"/venv-*; do
            if [ -d "$old" ] && [ "$(basename "$old")" != "$release" ]; then
                run rm -rf "$old"
            fi
        done
    else
        say "not started (--no-start); edit $CONF_DIR/config.yaml, then: systemctl start edge-agent"
    fi
}

do_uninstall() {
    need_root
    say "service"
    if [ -e "$UNIT" ]; then
        run systemctl disable --now edge-agent.service
        run rm -f "$UNIT"
        run systemctl daemon-reload
    else
        say "no unit at $UNIT"
    fi
    say "program $PREFIX"
    run rm -rf "$PREFIX"
    if [ "$purge" = 1 ]; then
        say "config and state (--purge)"
        run rm -rf "$CONF_DIR" "$STATE_DIR"
        if id -u "$USER_NAME" >/dev/null 2>&1; then
            run deluser --system "$USER_NAME"
        fi
    else
        say "kept $CONF_DIR and $STATE_DIR (remove them with: uninstall --purge)"
    fi
}

"do_$action"
