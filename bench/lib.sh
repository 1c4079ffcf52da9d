# shellcheck shell=bash
# What the benchmark scripts share: `say` (a progress line on stderr) and `need` (install a
# Debian package when a command is missing). Source it.

say() {
    printf '==> %s\n' "$*" >&2
}

apt_updated=
# need COMMAND PACKAGE...: installs PACKAGEs when COMMAND is missing; fails softly.
need() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    say "installing $* (for $cmd)"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            say "cannot install $* without root"
            return 1
        }
        sudo=(sudo -n)
    fi
    if [ -z "$apt_updated" ]; then
        "${sudo[@]}" apt-get update </dev/null >&2 || true
        apt_updated=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "$@" </dev/null >&2 || {
        say "could not install $*"
        return 1
    }
}
