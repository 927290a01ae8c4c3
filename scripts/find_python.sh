#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail with a clear message.
# Order: $CD49D_PYTHON, python3.13/python3.12/python3 on PATH, then pyenv's versions folder
# (pyenv shims refuse versions that are not selected, so its folder is searched directly).
set -u
is_suitable() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}
candidates=()
[ -n "${CD49D_PYTHON:-}" ] && candidates+=("$CD49D_PYTHON")
for name in python3.12 python3.13 python3; do
    path=$(command -v "$name" 2>/dev/null) && candidates+=("$path")
done
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
for dir in $(ls -d "$pyenv_root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do
    candidates+=("$dir/bin/python3")
done
for candidate in "${candidates[@]}"; do
    if is_suitable "$candidate"; then
        "$candidate" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
echo "find_python.sh: no Python >= 3.12 found (tried PATH and $pyenv_root/versions); set CD49D_PYTHON=/path/to/python3.12" >&2
exit 1
