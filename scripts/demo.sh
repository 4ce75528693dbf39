#!/usr/bin/env bash
# `make demo`: a certificate renewal in which the issuing intermediate rotated (R10 -> R11), as
# certsync sees it. Runs on the bundled examples; nothing leaves this machine.
set -uo pipefail
cd "$(dirname "$0")/.."
work=${DEMO_WORK:-.demo}  # steps 8-12 write here (git-ignored); DEMO_WORK moves it (the tests do)
old=examples/mail-2026-08.pem
new=examples/mail-2026-11.pem
connector_value="<I>CN=R10, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"

# `step TITLE EXIT COMMAND`: print the title and COMMAND, then run COMMAND, that very text (eval), and check
# that its exit code is EXIT, the one the step is about. What is shown is what runs: secrets stay variables.
step() {
  local title=$1 want=$2 command=$3
  printf '\n\033[1m== %s\033[0m\n$ %s\n' "$title" "$command"
  eval "$command"; local got=$?
  [ "$got" -eq "$want" ] || { echo "demo: expected exit $want from '$command', got $got" >&2; exit 1; }
  echo "(exit $got)"
}

step "1. The certificate the connectors use today" 0 "certsync name $old"

step "2. The renewed certificate, issued by a different intermediate" 0 "certsync name $new"

step "3. What the renewal changes for the connectors (exit 1: they must change)" 1 "certsync diff $old $new"

step "4. The value on the send connector today no longer selects the renewed certificate" 1 \
  "certsync parse \"$connector_value\" --cert $new"

step "5. Machine-readable, for scripts and pipelines" 1 "certsync diff --json $old $new"
at=2026-12-01T00:00Z  # a fixed time, so the demo tells the same story whenever it runs
step "6. Will Exchange accept the renewed certificate? Chain, dates, EKU, key, host names" 0 \
  "certsync check $new --trust examples/demo-root.pem --host mail.contoso.com --host smtp.contoso.com --at $at --revocation soft"

# The file's first certificate alone, the leaf: sed stops after its END line.
step "7. The old certificate alone: no intermediate delivered, expired by then, smtp.contoso.com not covered" 1 \
  "certsync check <(sed '/END CERTIFICATE/q' $old) --trust examples/demo-root.pem --host smtp.contoso.com --at $at --revocation off"

# Steps 8-14: the same kind of renewal as Key Vault announces it, through the event pipeline: a fresh
# demo PKI (dates relative to now) whose CRLs are served on loopback, a vault directory, a targets file
# that names only the worker group, the Exchange inventory discovery would read (certsync.inventory/1) and
# an Event Grid event, all in $work, cleaned first so that every run tells the same story.
rm -rf "$work/crl" "$work/vault" "$work/outbox" "$work/audit.sqlite" "$work/targets.json" "$work/event.json" \
  "$work/inventory.json" "$work/inventory.sqlite" \
  "$work/demo-root.pem" "$work/http.log" "$work/webhook.log" "$work/smtp.log" "$work/mailserver"
mkdir -p "$work/crl" || exit 1
python -u -m http.server --bind 127.0.0.1 --directory "$work/crl" 0 >"$work/http.log" 2>&1 &
crl_server=$!
background=("$crl_server")  # stopped on exit: the CRL server, the webhook receiver, the mail server
trap 'kill "${background[@]}" 2>/dev/null; wait "${background[@]}" 2>/dev/null' EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops the server on Ctrl-C and kill too
first_line() {  # wait for a background server's first output line (its URL or endpoint)
  local file=$1 line=
  for _ in $(seq 200); do
    line=$(head -n 1 "$file" 2>/dev/null)
    [ -n "$line" ] && { echo "$line"; return 0; }
    sleep 0.05
  done
  echo "demo: $file stayed empty; the server did not start" >&2
  return 1
}
# Port 0: the system picks a free port, and the server announces it once it is listening.
port=$(first_line "$work/http.log" | sed -n 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p')
[ -n "$port" ] || { echo "demo: the CRL server did not start:" >&2; cat "$work/http.log" >&2; exit 1; }

step "8. A demo PKI with the same rotation, generated now; its CRLs are served on 127.0.0.1:$port" 0 \
  "python scripts/demo_pki.py $work --port $port"

step "9. What Exchange has, as the read-only discovery runbook reports it: stored for the worker group" 0 \
  "certsync discover --import $work/inventory.json --worker-group hrw-exchange --inventory $work/inventory.sqlite --audit $work/audit.sqlite"

process="certsync process $work/event.json --vault-dir $work/vault --targets $work/targets.json \
--inventory-store $work/inventory.sqlite --trust $work/demo-root.pem --allow-host 127.0.0.1:$port \
--outbox $work/outbox --audit $work/audit.sqlite"

# A webhook receiver on loopback that verifies Standard Webhooks signatures with its own copy of the
# secret (the independent `standardwebhooks` library); certsync signs with CERTSYNC_WEBHOOK_SECRET.
# The receiver's URL and secret are in the environment (certsync reads CERTSYNC_WEBHOOK_URL and
# CERTSYNC_WEBHOOK_SECRET), never on a command line or on screen: a webhook URL is a secret, even this one.
CERTSYNC_WEBHOOK_SECRET=$(python -c "from shared.notify.signing import new_secret; print(new_secret())") || exit 1
export CERTSYNC_WEBHOOK_SECRET
receiver_command="python -u -m tests.receivers --secret \"\$CERTSYNC_WEBHOOK_SECRET\" --count 1 --timeout 60 \
>$work/webhook.log 2>&1"
printf '\nIn the background, a webhook receiver on loopback (CERTSYNC_WEBHOOK_URL is its URL):\n$ %s &\n' \
  "$receiver_command"
eval "$receiver_command" &
receiver=$!
background+=("$receiver")
CERTSYNC_WEBHOOK_URL=$(first_line "$work/webhook.log") || exit 1
export CERTSYNC_WEBHOOK_URL

step "10. Key Vault announces the renewal: the event through the pipeline (diff, assessment, plan, job, notice)" 0 \
  "$process"

step "11. Event Grid delivers the same event again: recognised, nothing queued twice, nobody notified twice" 0 \
  "$process"

step "12. The signed webhook, as the receiver saw it: the signature verifies with the shared secret" 0 \
  "wait $receiver && sed 1d $work/webhook.log  # the receiver's first line is its URL, a secret"
grep -q '^VERIFIED .* certsync\.queued' "$work/webhook.log" \
  || { echo "demo: the receiver did not verify the renewal's notice" >&2; exit 1; }

step "13. The job for the Hybrid Runbook Worker: identifiers and the plan, no key material" 0 \
  "python scripts/demo_job.py $work/outbox"

step "14. The audit trail: every step of both deliveries, one correlation id each" 0 \
  "certsync history exch-hybrid-smtp --audit $work/audit.sqlite"

# Steps 15-16: proof after the change, as Exchange Online sees the on-premises server: EHLO, STARTTLS,
# and the chain the server presents. The demo's mail server is an SMTP server on loopback.
mail_server() {  # serve a chain over STARTTLS; sets $smtp (the process) and $endpoint (HOST:PORT)
  : >"$work/smtp.log"
  python -u -m tests.smtp --chain "$1" --key "$work/mailserver/new-key.pem" >"$work/smtp.log" 2>&1 &
  smtp=$!
  background+=("$smtp")
  endpoint=$(first_line "$work/smtp.log")
}
probe_args="--servername mail.contoso.com --expect-file $work/mailserver/new-leaf.pem --trust $work/demo-root.pem \
--allow-host 127.0.0.1:$port"
mail_server "$work/mailserver/new-leaf.pem" || exit 1
step "15. The runbook imported the renewal, but the server does not send R11: Exchange Online cannot build the chain" 1 \
  "certsync probe $endpoint $probe_args"
kill "$smtp"; wait "$smtp" 2>/dev/null

mail_server "$work/mailserver/new-chain.pem" || exit 1
step "16. With R11 in Cert:\\LocalMachine\\CA (the plan's first step), the server sends the full chain" 0 \
  "certsync probe $endpoint $probe_args"

printf '\nDemo finished: the renewal needs a connector update, and certsync says exactly to what.\n'
