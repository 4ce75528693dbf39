#!/usr/bin/env bash
# `make demo`: a certificate renewal in which the issuing intermediate rotated (R10 -> R11), as
# certsync sees it. Runs on the bundled examples; nothing leaves this machine.
set -uo pipefail
cd "$(dirname "$0")/.."
work=${DEMO_WORK:-.demo}  # steps 8-12 write here (git-ignored); DEMO_WORK moves it (the tests do)
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

# Steps 8-12: the same kind of renewal as Key Vault announces it, through the event pipeline: a fresh
# demo PKI (dates relative to now) whose CRLs are served on loopback, a vault directory, a targets file
# and an Event Grid event, all in $work, cleaned first so that every run tells the same story.
rm -rf "$work/crl" "$work/vault" "$work/outbox" "$work/audit.sqlite" "$work/targets.json" "$work/event.json" \
  "$work/demo-root.pem" "$work/http.log"
mkdir -p "$work/crl" || exit 1
python -u -m http.server --bind 127.0.0.1 --directory "$work/crl" 0 >"$work/http.log" 2>&1 &
crl_server=$!
trap 'kill "$crl_server" 2>/dev/null; wait "$crl_server" 2>/dev/null' EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops the server on Ctrl-C and kill too
port=
for _ in $(seq 100); do  # port 0: the system picks a free port, and the server announces it
  port=$(sed -n 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p' "$work/http.log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "demo: the CRL server did not start:" >&2; cat "$work/http.log" >&2; exit 1; }
python - "$port" <<'PY' || { echo "demo: the CRL server on 127.0.0.1:$port does not answer" >&2; exit 1; }
import sys, time, urllib.error, urllib.request
for _ in range(50):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/root.crl", timeout=1).close()
        sys.exit(0)
    except urllib.error.HTTPError:  # it answers (root.crl is written in step 8)
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY

step "8. A demo PKI with the same rotation, generated now; its CRLs are served on 127.0.0.1:$port" \
  "python scripts/demo_pki.py $work --port $port"
expect 0 python scripts/demo_pki.py "$work" --port "$port"

process=(certsync process "$work/event.json" --vault-dir "$work/vault" --targets "$work/targets.json"
  --trust "$work/demo-root.pem" --allow-host "127.0.0.1:$port" --outbox "$work/outbox" --audit "$work/audit.sqlite")
step "9. Key Vault announces the renewal: the event through the pipeline (diff, assessment, plan, job)" \
  "${process[*]}"
expect 0 "${process[@]}"

step "10. Event Grid delivers the same event again: recognised, nothing queued twice" "${process[*]}"
expect 0 "${process[@]}"

step "11. The job for the Hybrid Runbook Worker: identifiers and the plan, no key material" \
  "python -m json.tool $work/outbox/*.json  (summarised)"
expect 0 python - "$work/outbox" <<'PY'
import base64, collections, json, pathlib, sys
jobs = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
if len(jobs) != 1:
    sys.exit(f"demo: expected one job file after two deliveries, found {len(jobs)}")
text = jobs[0].read_text(encoding="utf-8")
job, words = json.loads(text), ("PRIVATE KEY", "ENCRYPTED", "pfx", "pkcs12", "password", "private")
plan = job["plan"]
print(f"{jobs[0]}  (the only job file after two deliveries)")
for key in ("schema", "job_id", "correlation_id", "vault", "certificate", "version", "secret_id", "thumbprint"):
    print(f"  {key:<15} {job[key]}")
print(f"  plan            {plan['schema']}: {plan['change']}, assessment {plan['assessment_status']}, "
      f"worker group {plan['worker_group']}, servers {', '.join(plan['servers'])}")
print("  steps           " + ", ".join(f"{n} {p}" for p, n in collections.Counter(s["phase"] for s in plan["steps"]).items()))
for inter in plan["certificate"]["intermediates"]:
    size = len(base64.b64decode(inter["der_base64"]))
    print(f"  intermediate    {inter['subject']} ({inter['thumbprint'][:8]}: the public certificate, {size} bytes)")
found = [w for w in words if w.lower() in text.lower()]
if found:
    sys.exit(f"demo: the job file mentions {', '.join(found)}")
print("  key material    none: the runbook reads the PFX from Key Vault (secret_id) with its own identity")
PY

step "12. The audit trail: every step of both deliveries, one correlation id each" \
  "certsync history exch-hybrid-smtp --audit $work/audit.sqlite"
expect 0 certsync history exch-hybrid-smtp --audit "$work/audit.sqlite"

printf '\nDemo finished: the renewal needs a connector update, and certsync says exactly to what.\n'
