# Shared by scripts/test and scripts/up: everything a fresh clone needs, installed once.
# shellcheck shell=bash
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '==> %s\n' "$*" >&2; }

# apt_install PKG...: only as root (CI) with apt; everything else must be preinstalled.
apt_updated=0
apt_install() {
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "vigo setup: please install: $* (apt-get install $*)" >&2
        exit 1
    fi
    log "apt-get install $*"
    if [[ $apt_updated -eq 0 ]]; then
        apt-get update -q </dev/null
        apt_updated=1
    fi
    apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# need_cmd COMMAND DEBIAN_PACKAGE: install the package only if the command is missing.
# (Later: need_cmd kcat kcat; need_cmd promtool prometheus; need_cmd chromium chromium.)
need_cmd() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || { echo "vigo setup: $2 gave no '$1'" >&2; exit 1; }
}

pick_python() {
    local py
    for py in python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"
            return 0
        fi
    done
    echo "vigo setup: Python >= 3.11 not found; install python3.11" >&2
    exit 1
}

# --- virtualenv, reinstalled only when pyproject.toml changed
if [[ ! -x .venv/bin/python ]]; then
    py=$(pick_python)
    log "creating .venv with $py"
    if ! "$py" -m venv .venv; then # Debian splits ensurepip into pythonX-venv
        rm -rf .venv
        apt_install "$([[ $py == python3 ]] && echo python3-venv || echo "$py-venv")"
        "$py" -m venv .venv
    fi
fi
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "installing the project into .venv (pyproject.toml changed)"
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

# --- local Kafka jars (cached outside the tree; mvn only on the first run)
need_cmd java openjdk-17-jre-headless
jar_marker="${VIGO_CACHE_DIR:-$HOME/.cache/vigo}/kafka-4.1.1/.fetched"
[[ -f $jar_marker ]] || need_cmd mvn maven
python deploy/kafka/kafkabroker.py fetch >/dev/null


