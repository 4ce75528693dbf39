#!/usr/bin/env bash
# `make demo`: a certificate renewal in which the issuing intermediate rotated (R10 -> R11), as
# certsync sees it. Runs on the bundled examples; nothing leaves this machine.
set -uo pipefail
cd "$(dirname "$0")/.."
old=examples/mail-2026-08.pem
new=examples/mail-2026-11.pem
connector_value="<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }
expect() {  # run a command and check its exit code is the one this step is about
  local want=$1; shift
  "$@"; local got=$?
  [ "$got" -eq "$want" ] || { echo "demo: expected exit $want from '$*', got $got" >&2; exit 1; }
  echo "(exit $got)"
}

step "1. The certificate the connectors use today" "certsync name $old"
expect 0 certsync name "$old"

step "2. The renewed certificate, issued by a different intermediate" "certsync name $new"
expect 0 certsync name "$new"

step "3. What the renewal changes for the connectors (exit 1: they must change)" "certsync diff $old $new"
expect 1 certsync diff "$old" "$new"

step "4. The value on the send connector today no longer selects the renewed certificate" \
  "certsync parse \"$connector_value\" --cert $new"
expect 1 certsync parse "$connector_value" --cert "$new"

step "5. Machine-readable, for scripts and pipelines" "certsync diff --json $old $new"
expect 1 certsync diff --json "$old" "$new"
at=2026-12-01T00:00Z  # a fixed time, so the demo tells the same story whenever it runs
step "6. Will Exchange accept the renewed certificate? Chain, dates, EKU, key, host names" \
  "certsync check $new --trust examples/demo-root.pem --host mail.contoso.com --host smtp.contoso.com --at $at --revocation soft"
expect 0 certsync check "$new" --trust examples/demo-root.pem --host mail.contoso.com --host smtp.contoso.com \
  --at "$at" --revocation soft

step "7. The old certificate alone: no intermediate delivered, expired by then, smtp.contoso.com not covered" \
  "certsync check $old --trust examples/demo-root.pem --host smtp.contoso.com --at $at --revocation off"
expect 1 certsync check <(head -n "$(grep -n 'END CERTIFICATE' "$old" | head -1 | cut -d: -f1)" "$old") \
  --trust examples/demo-root.pem --host smtp.contoso.com --at "$at" --revocation off
printf '\nDemo finished: the renewal needs a connector update, and certsync says exactly to what.\n'
