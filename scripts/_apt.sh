# Sourced by scripts/browser and scripts/services: `apt_install WHO PACKAGE...` installs Debian
# packages for the tests, with sudo unless already root.
#
# --no-install-recommends: the tests need the programs, not a desktop. Chromium's recommended
# packages alone (udev, upower, colord, printing, avahi, samba client...) made 125 packages of
# what is 25 without them. apt's output goes to a log file, printed only when the install
# fails, so that it stays out of the test log.
apt_install() {
    local who="$1"
    shift
    local sudo=""
    if ! command -v apt-get >/dev/null; then
        echo "$who: apt-get not found; install $* yourself" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "$who: not root and no sudo; install it yourself:" \
                "apt-get install --no-install-recommends $*" >&2
            return 1
        fi
        sudo="sudo"
    fi
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/sagents-apt.XXXXXX")"
    # `env` because sudo does not pass DEBIAN_FRONTEND on.
    if $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "$@" >>"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    echo "$who: apt-get install $* failed; apt said:" >&2
    cat "$log" >&2
    rm -f "$log"
    return 1
}
