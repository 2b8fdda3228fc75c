# Sourced by build_iso.sh (and tests/test_live_cleanup.py): remove a build directory that an
# interrupted build may have left with mounts inside it. debootstrap and live/bootstrap.sh mount
# proc, sys, dev, dev/pts and run inside the root they build; a build killed at that moment
# leaves them mounted, and a plain `rm -rf` then fails on proc (or, worse, walks into a bind
# mount of the host's /dev). So: unmount everything at or below the directory, deepest first
# (lazily when busy), check that nothing is left, and only then remove it, never crossing into
# another filesystem.

# The mount points at or below DIR, deepest first (findmnt escapes blanks as \x20).
mounts_under() {
    local dir
    dir=$(realpath -m "$1")
    findmnt -rn -o TARGET | while IFS= read -r target; do
        target=$(printf '%b' "$target")
        if [ "$target" = "$dir" ] || [ "${target#"$dir"/}" != "$target" ]; then
            printf '%d %s\n' "${#target}" "$target"
        fi
    done | sort -rn | cut -d' ' -f2-
}

# Unmount whatever is mounted at or below each DIR.
unmount_under() {
    local dir target
    for dir in "$@"; do
        [ -e "$dir" ] || continue
        while IFS= read -r target; do
            [ -n "$target" ] || continue
            echo "cleanup: unmounting $target (left by an interrupted build)" >&2
            umount "$target" 2>/dev/null || umount -l "$target" || {
                echo "cleanup: cannot unmount $target" >&2
                return 1
            }
        done < <(mounts_under "$dir")
    done
}

# Remove each DIR after unmounting what is inside it; refuses while anything is still mounted.
remove_build_dir() {
    local dir
    unmount_under "$@" || return 1
    for dir in "$@"; do
        [ -e "$dir" ] || [ -L "$dir" ] || continue
        if [ -n "$(mounts_under "$dir")" ]; then
            echo "cleanup: $dir still has mounts inside it; not removing it:" >&2
            mounts_under "$dir" >&2
            return 1
        fi
        rm -rf --one-file-system -- "$dir"
    done
}
