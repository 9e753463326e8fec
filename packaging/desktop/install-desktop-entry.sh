#!/bin/sh
# Install the sam-inspect menu entry and icon for the current user (Linux, freedesktop.org).
# Run from the bundle folder: ./install-desktop-entry.sh   (remove with --uninstall)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor"
if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$apps/sam-inspect.desktop" "$icons/256x256/apps/sam-inspect.png" \
          "$icons/scalable/apps/sam-inspect.svg"
    echo "removed the sam-inspect menu entry"
    exit 0
fi
mkdir -p "$apps" "$icons/256x256/apps" "$icons/scalable/apps"
cp "$here/icon.png" "$icons/256x256/apps/sam-inspect.png"
cp "$here/icon.svg" "$icons/scalable/apps/sam-inspect.svg"
# Exec must be an absolute path; quote it for spaces (Desktop Entry spec, "Exec key").
sed "s|^Exec=sam-inspect|Exec=\"$here/sam-inspect\"|" "$here/sam-inspect.desktop" \
    > "$apps/sam-inspect.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
echo "installed $apps/sam-inspect.desktop (runs $here/sam-inspect)"
