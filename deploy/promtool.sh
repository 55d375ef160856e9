#!/usr/bin/env bash
# Print the path of a promtool that knows Kubernetes service discovery, fetching it if needed.
#
# Debian 12's prometheus package is built without Kubernetes SD, so its promtool rejects
# deploy/monitoring/prometheus.yml. Debian 13 packages promtool 2.53 on its own (`promtool`),
# with Kubernetes SD, linked only against libc: we download that package from Debian's archive
# and extract the binary into target/tools (nothing is installed on the system).
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/target/tools"
if [ -x "$tools/promtool" ]; then
  echo "$tools/promtool"
  exit 0
fi
mkdir -p "$tools/apt/lists/partial" "$tools/apt/cache/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$tools/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$tools/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$tools/apt/lists" -o "Dir::Cache=$tools/apt/cache" -o "Debug::NoLocking=1")
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$tools" && apt-get "${apt_opts[@]}" download promtool >&2 2>/dev/null || apt-get "${apt_opts[@]}" download promtool >&2)
dpkg -x "$tools"/promtool_*.deb "$tools/x"
cp "$tools/x/usr/bin/promtool" "$tools/promtool"
"$tools/promtool" --version >&2
echo "$tools/promtool"
