# Sourced by the scripts that install packages: as_root COMMAND... runs the command as root,
# through sudo when not root already. The caller sets `script` to the name its messages use.

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "${script:-scripts}: need root to run: $*" >&2
        exit 1
    fi
}
