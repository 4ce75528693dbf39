#!/usr/bin/env bash
# Installs the pinned Azurite (Azure Storage emulator) the integration tests run, into .tools/azurite.
#
# What is installed is exactly tools/azurite/package-lock.json (azurite 3.37.0 and its dependency tree,
# integrity-checked), from the npm registry npm is configured with, with no install scripts run.
# Idempotent: .tools/azurite/.installed records a hash of the lock and package files; when it matches,
# the script only touches it (so make sees the stamp as fresh) and returns at once.
#
# Needs node and npm; when they are missing it installs Debian's nodejs and npm with apt-get.
# Azurite 3.37.0 declares node >=22 but runs on node 20 (npm prints EBADENGINE warnings; harmless).
set -euo pipefail
cd "$(dirname "$0")/.."

SOURCE=tools/azurite
TARGET=.tools/azurite
STAMP=$TARGET/.installed
BIN=$TARGET/node_modules/.bin/azurite

wanted=$(cat "$SOURCE/package.json" "$SOURCE/package-lock.json" | sha256sum | cut -d' ' -f1)

up_to_date() {
	[[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$wanted" ]]
}

if up_to_date; then
	touch "$STAMP"
	exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "installing nodejs and npm (Azurite runs on node)"
	apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

mkdir -p .tools
# Two concurrent runs (two make invocations) must not install over each other.
exec 9>.tools/azurite.lock
flock 9
if up_to_date; then
	touch "$STAMP"
	exit 0
fi

echo "installing azurite from $SOURCE/package-lock.json into $TARGET"
started=$SECONDS
staging=.tools/azurite.staging
rm -rf "$staging"
mkdir -p "$staging"
cp "$SOURCE/package.json" "$SOURCE/package-lock.json" "$staging/"
# --ignore-scripts: Azurite needs none (npm 11 would skip protobufjs's postinstall anyway).
(cd "$staging" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
test -x "$staging/node_modules/.bin/azurite" || {
	echo "install-azurite: npm ci finished but $staging/node_modules/.bin/azurite is missing" >&2
	exit 1
}
# Swap the finished tree in, so an interrupted install never leaves a half-populated $TARGET behind.
rm -rf "$TARGET"
mv "$staging" "$TARGET"
echo "$wanted" >"$STAMP"
echo "azurite $(node -p "require('./$TARGET/node_modules/azurite/package.json').version") installed in $((SECONDS - started)) s"
