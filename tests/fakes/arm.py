"""A local HTTPS Azure Resource Manager that serves the Azure Automation job API (api-version 2024-10-23),
checks the contract our client relies on, and simulates jobs running on a Hybrid Runbook Worker group.

There is no Automation emulator, so this is our own: an `HttpsServer` from `tests.servers`, on
`https://127.0.0.1:PORT`.

    with FakeArm(tls) as arm:
        arm.script(["New", "Running", "Failed"], exception="Set-SendConnector: access denied")
        client = AutomationClient(arm.account_id, arm.credential, endpoint=arm.endpoint, **arm.client_kwargs)
        client.start_job(name, "Invoke-CertsyncRemediation", {"PlanJson": "{}"}, "hrw-exchange")

Served under `account_id` (= /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Automation/
automationAccounts/{account}; these segments are matched case-insensitively, as ARM does):
- `PUT  .../jobs/{jobName}`: create (start) a job. The body must be JSON (`Content-Type: application/json`,
  else 415 UnsupportedMediaType; unparseable, 400 BadRequest) with `properties.runbook.name` a runbook the
  account has (else 404 "Runbook not found."), `properties.parameters` absent or a string->string map
  (else 400 BadRequest), and `properties.runOn` one of the account's hybrid worker groups (else 400
  BadRequest; an empty or missing runOn is ARM's "run in the Azure sandbox", which the fake accepts and
  records as ""). Other body keys are ignored. Answer: 201 with the job resource, status "New",
  provisioningState "Processing".
- `GET  .../jobs/{jobName}`: the job; every GET moves it one step along its script (see `script`), the
  last state sticks. `startTime` is set once the job has left New/Activating, `endTime` in a terminal
  state, `exception` (the scripted one) in Failed, Stopped and Suspended.
- `GET  .../jobs/{jobName}/output`: the scripted Output text, `text/plain`.
- `GET  .../jobs/{jobName}/streams[?$filter=properties/streamType eq 'Error']`: stream records, one per
  output line (Output) and per scripted error (Error), `stream_page_size` a page, linked by an absolute
  `nextLink` carrying a `$skipToken` (and the filter and api-version). List items carry a `summary`
  (cut to `summary_length` characters) but no `streamText`, so a client must fetch the record for the
  full text. Other filters answer 400 BadRequest.
- `GET  .../jobs/{jobName}/streams/{jobStreamId}`: one record with its full `streamText`.
- `POST .../jobs/{jobName}/stop`: 200; the next GET shows "Stopping", then "Stopped". On a job already
  in a terminal state it is a no-op 200 (assumed).

Checked on every request, in ARM's order: the bearer token (missing or not `credential`'s: 401
InvalidAuthenticationToken-like, with ARM's `WWW-Authenticate`), then `api-version` (missing: 400
MissingApiVersionParameter; not a date: 400 InvalidApiVersionParameter; any other version than
2024-10-23: 400 NoRegisteredProviderFound), then `fail_next`, then the path (unknown subscription,
resource group or account: 404 SubscriptionNotFound / ResourceGroupNotFound / ResourceNotFound; an
unknown route under the account: 404 ResourceNotFound; a known route with the wrong method: 405).
Errors carry ARM's body `{"error": {"code": ..., "message": ...}}`.

Assumptions, not verified against Azure (the client must cope either way):
- A second PUT of an existing jobName answers 409 Conflict (code "Conflict") and starts nothing; the
  spec leaves re-PUT undefined (exchange-azure-facts §3.2 "?"). A real ARM might answer 200/201 with
  the existing job or start a second one; the client's GET-before-PUT keeps the last case away.
- An unknown hybrid worker group is refused with 400 at creation (ARM may instead queue the job).
- The 404 for an unknown runbook uses code "NotFound" and a message naming the runbook.

For `certsync doctor --deployment` it also serves reads of the deployment:
- `GET .../automationAccounts/{account}`: the account (`{"name", "properties": {"state": "Ok"}}`);
- `GET .../hybridRunbookWorkerGroups/{group}`: a group of `worker_groups` (404 for another);
- `GET .../hybridRunbookWorkerGroups/{group}/hybridRunbookWorkers`: `{"value": [...]}`, one item per worker
  of `workers[group]` (name -> lastSeenDateTime text), as ARM lists them;
- `GET <event subscription id>` under `providers/Microsoft.EventGrid/systemTopics/{topic}/eventSubscriptions/
  {name}` (api-version 2025-02-15, the only one accepted there): the document in `event_subscriptions`
  (keyed by the lower-case id), else 404. `add_event_subscription(...)` builds a realistic one;
- `GET .../providers/Microsoft.KeyVault/vaults/{name}` (api-version 2026-02-01 only): a vault of `key_vaults`
  (name -> enableRbacAuthorization), else 404;
- `GET <scope>/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()` (api-version 2022-04-01):
  the entries of `role_assignments` at that scope or above it.

`delay_next(seconds)` holds the next answer back (for read timeouts).

`jobs` maps jobName to what was created (`body`, `parameters`, `runOn`, `runbook`, `states`, `polls`,
plus `job_id`, `output`, `exception`, `error_streams`); `requests` lists (method, path, query, body) of
every request in order (query values decoded, last one wins); `http_requests` keeps the full `Request`
objects with their headers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.fakes.keyvault import StaticTokenCredential
from tests.servers import Headers, HttpsServer, LoopbackTls, Request, Route

API_VERSION = "2024-10-23"
EVENT_GRID_API_VERSION = "2025-02-15"
KEY_VAULT_API_VERSION = "2026-02-01"
AUTHORIZATION_API_VERSION = "2022-04-01"
JOB_TYPE = "Microsoft.Automation/AutomationAccounts/Jobs"
TERMINAL_STATES = frozenset({"Completed", "Failed", "Stopped", "Suspended"})
DEFAULT_STATES = ("New", "Running", "Completed")
_NOT_STARTED = frozenset({"New", "Activating", "Queued"})
_WITH_EXCEPTION = frozenset({"Failed", "Stopped", "Suspended"})
_ERROR_FILTER = re.compile(r"^\s*properties/streamType\s+eq\s+'(\w+)'\s*$", re.IGNORECASE)
_API_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

_DEFAULT_MESSAGES = {
    400: ("BadRequest", "The request is invalid."),
    401: ("InvalidAuthenticationToken", "The access token is invalid."),
    403: (
        "AuthorizationFailed",
        "The client '{client}' with object id '{client}' does not have authorization to perform action "
        "'Microsoft.Automation/automationAccounts/jobs/{action}' over scope '{scope}' or the scope is invalid. "
        "If access was recently granted, please refresh your credentials.",
    ),
    404: ("ResourceNotFound", "The Resource '{scope}' was not found."),
    409: ("Conflict", "The request conflicts with the current state of the resource."),
    429: ("TooManyRequests", "The request is being throttled as the limit has been reached for operation type."),
    500: ("InternalServerError", "An internal server error occurred. Please retry the request."),
    502: ("BadGateway", "The gateway did not receive a response within the specified time period."),
    503: ("ServiceUnavailable", "The service is currently unavailable. Please try again later."),
}

Answer = tuple[int, dict[str, str], bytes]


class FakeArm(HttpsServer):
    """The fake ARM on `https://127.0.0.1:PORT` with one Automation account (a context manager).

    Without `tls` it makes its own CA in a temporary directory, removed on `stop()`."""

    def __init__(
        self,
        tls: LoopbackTls | None = None,
        *,
        subscription: str = "00000000-0000-0000-0000-000000000001",
        resource_group: str = "rg-certsync",
        account: str = "aa-certsync",
        runbooks: tuple[str, ...] = ("Invoke-CertsyncRemediation",),
        worker_groups: tuple[str, ...] = ("hrw-exchange",),
        stream_page_size: int = 2,
        summary_length: int = 40,
    ) -> None:
        super().__init__(tls, name="fake-arm")
        self.subscription = subscription
        self.resource_group = resource_group
        self.account = account
        self.runbooks = tuple(runbooks)
        self.worker_groups = tuple(worker_groups)
        self.stream_page_size = stream_page_size
        self.summary_length = summary_length
        self.credential = StaticTokenCredential(secrets.token_urlsafe(24))
        self.principal_id = str(uuid.uuid4())
        self.jobs: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, dict[str, str]] = {}  # group -> worker name -> lastSeenDateTime
        self.event_subscriptions: dict[str, dict[str, Any]] = {}  # lower-case resource id -> document
        self.key_vaults: dict[str, bool] = {}  # vault name (in `resource_group`) -> enableRbacAuthorization
        self.role_assignments: list[dict[str, str]] = []  # {scope, roleDefinitionId, principalId, principalType}
        self._scripts: deque[dict[str, Any]] = deque()
        self._failures: deque[dict[str, Any]] = deque()
        self._delays: deque[float] = deque()
        self._data_lock = threading.RLock()

    # what clients need

    @property
    def endpoint(self) -> str:
        """`https://127.0.0.1:PORT` (the test certificate names 127.0.0.1)."""
        return self.origin

    @property
    def account_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Automation/automationAccounts/{self.account}"
        )

    @property
    def client_kwargs(self) -> dict[str, Any]:
        """Keywords for `AutomationClient`: trust the test CA."""
        return {"connection_verify": str(self.tls.ca_pem)}

    @property
    def env(self) -> dict[str, str]:
        """The app settings that point `automation_from_env` at this fake."""
        return {"AUTOMATION_ACCOUNT_ID": self.account_id, "CERTSYNC_ARM_ENDPOINT": self.endpoint}

    def event_subscription_id(self, topic: str = "evgt-certsync-kv", name: str = "certsync-certificate-events") -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.EventGrid/systemTopics/{topic}/eventSubscriptions/{name}"
        )

    @property
    def function_app_id(self) -> str:
        """The Function App event subscriptions deliver to (`add_event_subscription`)."""
        group = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return f"{group}/providers/Microsoft.Web/sites/func-certsync"

    def add_event_subscription(
        self,
        resource_id: str,
        *,
        function: str = "keyvault_certificate_events",
        event_types: Sequence[str] = (
            "Microsoft.KeyVault.CertificateNewVersionCreated",
            "Microsoft.KeyVault.CertificateNearExpiry",
            "Microsoft.KeyVault.CertificateExpired",
        ),
        state: str = "Succeeded",
    ) -> None:
        """An event subscription as ARM returns it, delivering to `function` of a Function App."""
        site = self.function_app_id
        self.event_subscriptions[resource_id.lower()] = {
            "id": resource_id,
            "name": resource_id.rsplit("/", 1)[-1],
            "type": "Microsoft.EventGrid/eventSubscriptions",
            "properties": {
                "provisioningState": state,
                "destination": {
                    "endpointType": "AzureFunction",
                    "properties": {"resourceId": f"{site}/functions/{function}"},
                },
                "filter": {"includedEventTypes": list(event_types)},
                "eventDeliverySchema": "EventGridSchema",
            },
        }

    # scripting

    def script(
        self,
        states: Sequence[str],
        *,
        output: str = "",
        exception: str | None = None,
        error_streams: Sequence[str] = (),
    ) -> None:
        """How the next created job runs (scripts queue up, one per job): the first GET shows `states[0]`,
        each later GET the next state, the last one sticks. `output` is the Output stream (text),
        `exception` `properties.exception`, `error_streams` the Error records."""
        if not states:
            raise ValueError("script needs at least one state")
        entry = {"states": list(states), "output": output, "exception": exception, "error_streams": list(error_streams)}
        with self._data_lock:
            self._scripts.append(entry)

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        code: str = "",
        message: str = "",
        retry_after: int | str | None = None,
        method: str | None = None,
        path_suffix: str | None = None,
    ) -> None:
        """The next `count` authenticated requests with a valid api-version (only those of `method`, and
        whose path ends with `path_suffix`, when given) answer `status` with ARM's error body (a default
        code and message per status), plus `Retry-After: <retry_after>` when given (seconds, or a string
        such as an HTTP date). Calls queue up: earlier ones are used first."""
        default_code, default_message = _DEFAULT_MESSAGES.get(status, ("Error", "The request failed."))
        if not message:
            action = "write" if method and method.upper() == "PUT" else "read"
            message = default_message.format(client=self.principal_id, scope=self.account_id, action=action)
        with self._data_lock:
            self._failures.append(
                {
                    "status": status,
                    "count": count,
                    "code": code or default_code,
                    "message": message,
                    "retry_after": retry_after,
                    "method": method.upper() if method else None,
                    "path_suffix": path_suffix,
                }
            )

    def delay_next(self, seconds: float, *, count: int = 1) -> None:
        """Hold the answer to the next `count` requests for `seconds` (cut short by `stop()`): a client
        with a shorter read timeout sees a timeout."""
        with self._data_lock:
            self._delays.extend([seconds] * count)

    # observations

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str], bytes]]:  # type: ignore[override]
        """(method, path, query, body) of every request in order; the path is decoded, without query."""
        return [_split(request) for request in super().requests]

    @property
    def http_requests(self) -> list[Request]:
        """The requests with their headers, as `HttpServer` recorded them."""
        return super().requests

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    # serving

    def _lookup(self, path: str) -> Route | None:
        with self._data_lock:
            delay = self._delays.popleft() if self._delays else 0.0
        return Route(handler=self._answer, delay=delay)

    def _answer(self, method: str, target: str, headers: Headers, body: bytes) -> Answer:
        path, query = _path_and_query(target)
        if headers.get("Authorization") is None:
            return _unauthorized(
                "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        if headers.get("Authorization") != f"Bearer {self.credential.token}":
            return _unauthorized("InvalidAuthenticationToken", "The access token is invalid.")
        problem = self._check_api_version(query.get("api-version"), path)
        if problem is not None:
            return problem
        failure = self._take_failure(method, path)
        if failure is not None:
            return failure
        return self._route(method, path, query, headers, body)

    def _check_api_version(self, version: str | None, path: str = "") -> Answer | None:
        lowered = path.lower()
        expected = API_VERSION
        if "/microsoft.authorization/" in lowered:
            expected = AUTHORIZATION_API_VERSION
        elif "/microsoft.eventgrid/" in lowered:
            expected = EVENT_GRID_API_VERSION
        elif "/microsoft.keyvault/" in lowered:
            expected = KEY_VAULT_API_VERSION
        if not version:
            return _error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not _API_VERSION_SHAPE.match(version):
            return _error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{expected}'.",
            )
        if version != expected:
            return _error(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location 'westeurope' and API version '{version}' "
                f"for type 'automationAccounts/jobs'. The supported api-versions are '{expected}'.",
            )
        return None

    def _take_failure(self, method: str, path: str) -> Answer | None:
        with self._data_lock:
            failure = next(
                (f for f in self._failures if f["method"] in (None, method) and path.endswith(f["path_suffix"] or "")),
                None,
            )
            if failure is None:
                return None
            failure["count"] -= 1
            if failure["count"] <= 0:
                self._failures.remove(failure)
        status, extra, payload = _error(failure["status"], failure["code"], failure["message"])
        if failure["retry_after"] is not None:
            extra["Retry-After"] = str(failure["retry_after"])
        return status, extra, payload

    def _route(self, method: str, path: str, query: dict[str, str], headers: Headers, body: bytes) -> Answer:
        segments = path.strip("/").split("/")
        if len(segments) < 2 or segments[0].lower() != "subscriptions":
            return _error(404, "ResourceNotFound", f"No route for '{path}'.")
        if segments[1].lower() != self.subscription.lower():
            return _error(404, "SubscriptionNotFound", f"The subscription '{segments[1]}' could not be found.")
        if len(segments) < 4 or segments[2].lower() != "resourcegroups":
            return _error(404, "ResourceNotFound", f"No route for '{path}'.")
        if segments[3].lower() != self.resource_group.lower():
            return _error(404, "ResourceGroupNotFound", f"Resource group '{segments[3]}' could not be found.")
        if [s.lower() for s in segments[4:6]] == ["providers", "microsoft.eventgrid"]:
            return self._event_subscription(method, path)
        if [s.lower() for s in segments[4:7]] == ["providers", "microsoft.keyvault", "vaults"] and len(segments) == 8:
            return self._key_vault(method, path, segments[7])
        if [s.lower() for s in segments[8:11]] == ["providers", "microsoft.authorization", "roleassignments"]:
            return self._role_assignments(method, path, query)
        prefix = ["providers", "microsoft.automation", "automationaccounts"]
        if len(segments) < 7 or [s.lower() for s in segments[4:7]] != prefix:
            return _error(404, "ResourceNotFound", f"No route for '{path}'.")
        if segments[7:8] and segments[7].lower() != self.account.lower():
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Automation/automationAccounts/{segments[7]}' under resource group "
                f"'{segments[3]}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        rest = segments[8:]
        if method == "GET" and rest and rest[0].lower() == "hybridrunbookworkergroups":
            return self._worker_group(rest[1:])
        if method == "GET" and not rest and len(segments) == 8:
            return _json(200, {"id": self.account_id, "name": self.account, "properties": {"state": "Ok"}})
        if len(rest) < 2 or rest[0].lower() != "jobs":
            return _error(404, "ResourceNotFound", f"The fake ARM has no route for '{path}'.")
        name = rest[1]
        tail = [s.lower() for s in rest[2:]]
        routes: dict[tuple[str, ...], tuple[str, Any]] = {
            (): ("GET", lambda: self._get_job(name)),
            ("output",): ("GET", lambda: self._output(name)),
            ("streams",): ("GET", lambda: self._list_streams(name, query)),
            ("stop",): ("POST", lambda: self._stop(name)),
        }
        if len(tail) == 2 and tail[0] == "streams":
            return self._one_stream(name, rest[3]) if method == "GET" else _not_allowed(method, path)
        if tail == [] and method == "PUT":
            return self._create(name, headers, body)
        if tuple(tail) not in routes:
            return _error(404, "ResourceNotFound", f"The fake ARM has no route for '{path}'.")
        allowed, handler = routes[tuple(tail)]
        if method != allowed:
            return _not_allowed(method, path)
        return handler()

    # deployment reads (doctor --deployment)

    def _worker_group(self, rest: list[str]) -> Answer:
        groups = {g.lower(): g for g in self.worker_groups}
        if not rest or rest[0].lower() not in groups:
            name = rest[0] if rest else ""
            return _error(404, "NotFound", f"Hybrid Runbook Worker group '{name}' not found.")
        group = groups[rest[0].lower()]
        if len(rest) == 1:
            return _json(200, {"id": f"{self.account_id}/hybridRunbookWorkerGroups/{group}", "name": group})
        if len(rest) == 2 and rest[1].lower() == "hybridrunbookworkers":
            items = [
                {
                    "id": f"{self.account_id}/hybridRunbookWorkerGroups/{group}/hybridRunbookWorkers/{name}",
                    "name": name,
                    "properties": {"workerName": name, "workerType": "HybridV2", "lastSeenDateTime": seen},
                }
                for name, seen in self.workers.get(group, {}).items()
            ]
            return _json(200, {"value": items})
        return _error(404, "ResourceNotFound", "The fake ARM has no route for this worker group path.")

    def _key_vault(self, method: str, path: str, name: str) -> Answer:
        if method != "GET":
            return _not_allowed(method, path)
        vaults = {n.lower(): (n, rbac) for n, rbac in self.key_vaults.items()}
        if name.lower() not in vaults:
            return _error(404, "ResourceNotFound", f"The Resource 'Microsoft.KeyVault/vaults/{name}' was not found.")
        vault, rbac = vaults[name.lower()]
        return _json(200, {"id": path, "name": vault, "properties": {"enableRbacAuthorization": rbac}})

    def _role_assignments(self, method: str, path: str, query: dict[str, str]) -> Answer:
        """`atScope()`: the assignments at the scope or above it (a prefix of it), as ARM filters them."""
        if method != "GET":
            return _not_allowed(method, path)
        if query.get("$filter") != "atScope()":
            return _error(400, "BadRequest", "The fake ARM lists role assignments only with $filter=atScope().")
        scope = path.split("/providers/Microsoft.Authorization/", 1)[0].lower().rstrip("/")
        items = [
            {"id": f"{a['scope']}/providers/Microsoft.Authorization/roleAssignments/{i}", "properties": dict(a)}
            for i, a in enumerate(self.role_assignments)
            if scope == a["scope"].lower().rstrip("/") or scope.startswith(a["scope"].lower().rstrip("/") + "/")
        ]
        return _json(200, {"value": items})

    def _event_subscription(self, method: str, path: str) -> Answer:
        if method != "GET":
            return _not_allowed(method, path)
        found = self.event_subscriptions.get(path.rstrip("/").lower())
        if found is None:
            return _error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        return _json(200, found)

    # jobs

    def _job_id(self, name: str) -> str:
        return f"{self.account_id}/jobs/{name}"

    def _create(self, name: str, headers: Headers, body: bytes) -> Answer:
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(
                415,
                "UnsupportedMediaType",
                f"The content media type '{content_type}' is not supported. Only 'application/json' is supported.",
            )
        try:
            document = json.loads(body)
        except ValueError:
            return _error(400, "BadRequest", "The request content was invalid and could not be deserialized.")
        properties = document.get("properties") if isinstance(document, dict) else None
        if not isinstance(properties, dict):
            return _error(400, "BadRequest", "The request body must have a 'properties' object.")
        runbook = properties.get("runbook")
        runbook_name = runbook.get("name") if isinstance(runbook, dict) else None
        if not isinstance(runbook_name, str) or not runbook_name:
            return _error(400, "BadRequest", "properties.runbook.name is required.")
        known = next((r for r in self.runbooks if r.lower() == runbook_name.lower()), None)
        if known is None:
            return _error(404, "NotFound", f"Runbook not found: '{runbook_name}' is not in this Automation account.")
        parameters = properties.get("parameters", {})
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
            return _error(400, "BadRequest", "properties.parameters must be a map of parameter names to string values.")
        run_on = properties.get("runOn") or ""
        if not isinstance(run_on, str):
            return _error(400, "BadRequest", "properties.runOn must be a string.")
        group = next((g for g in self.worker_groups if g.lower() == run_on.lower()), None) if run_on else ""
        if group is None:
            return _error(
                400,
                "BadRequest",
                f"Hybrid Runbook Worker group '{run_on}' (runOn) was not found in this Automation account.",
            )
        now = _now()
        with self._data_lock:
            if name in self.jobs or any(existing.lower() == name.lower() for existing in self.jobs):
                return _error(409, "Conflict", f"A job with name '{name}' already exists.")
            script = self._scripts.popleft() if self._scripts else None
            script = script or {"states": list(DEFAULT_STATES), "output": "", "exception": None, "error_streams": []}
            job = {
                "name": name,
                "body": document,
                "parameters": dict(parameters),
                "runOn": run_on,
                "runbook": known,
                "polls": 0,
                "job_id": str(uuid.uuid4()),
                "created": now,
                "started": None,
                "ended": None,
                **script,
            }
            self.jobs[name] = job
            resource = self._resource(job, "New")
        return _json(201, resource)

    def _find(self, name: str) -> dict[str, Any] | None:
        with self._data_lock:
            return self.jobs.get(name) or next((j for n, j in self.jobs.items() if n.lower() == name.lower()), None)

    def _job_not_found(self, name: str) -> Answer:
        return _error(
            404, "ResourceNotFound", f"The job '{name}' was not found in Automation account '{self.account}'."
        )

    def _get_job(self, name: str) -> Answer:
        with self._data_lock:
            job = self._find(name)
            if job is None:
                return self._job_not_found(name)
            states = job["states"]
            status = states[min(job["polls"], len(states) - 1)]
            job["polls"] += 1
            now = _now()
            if status not in _NOT_STARTED and job["started"] is None:
                job["started"] = now
            if status in TERMINAL_STATES and job["ended"] is None:
                job["ended"] = now
            resource = self._resource(job, status)
        return _json(200, resource)

    def _resource(self, job: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": self._job_id(job["name"]),
            "name": job["name"],
            "type": JOB_TYPE,
            "properties": {
                "runbook": {"name": job["runbook"]},
                "startedBy": None,
                "runOn": job["runOn"],
                "jobId": job["job_id"],
                "creationTime": job["created"],
                "status": status,
                "statusDetails": "None",
                "startTime": job["started"],
                "endTime": job["ended"],
                "exception": job["exception"] if status in _WITH_EXCEPTION else None,
                "lastModifiedTime": _now(),
                "lastStatusModifiedTime": _now(),
                "parameters": job["parameters"],
                "provisioningState": "Processing" if status not in TERMINAL_STATES else "Succeeded",
            },
        }

    def _output(self, name: str) -> Answer:
        job = self._find(name)
        if job is None:
            return self._job_not_found(name)
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, job["output"].encode()

    def _stop(self, name: str) -> Answer:
        with self._data_lock:
            job = self._find(name)
            if job is None:
                return self._job_not_found(name)
            states = job["states"]
            shown = [states[min(n, len(states) - 1)] for n in range(job["polls"])]
            if not shown or shown[-1] not in TERMINAL_STATES:
                job["states"] = [*shown, "Stopping", "Stopped"]
        return 200, {"Content-Length": "0"}, b""

    # streams

    def _records(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        lines = [("Output", line) for line in job["output"].splitlines() if line.strip()]
        lines += [("Error", text) for text in job["error_streams"]]
        stamp = job["created"]
        return [
            {
                "jobStreamId": f"{job['job_id']}_00638000000000000000_{n:020d}",
                "time": stamp,
                "streamType": kind,
                "streamText": text,
                "summary": text[: self.summary_length],
            }
            for n, (kind, text) in enumerate(lines, start=1)
        ]

    def _list_streams(self, name: str, query: dict[str, str]) -> Answer:
        job = self._find(name)
        if job is None:
            return self._job_not_found(name)
        records = self._records(job)
        wanted = query.get("$filter")
        if wanted:
            match = _ERROR_FILTER.match(wanted)
            if match is None:
                return _error(400, "BadRequest", f"Invalid $filter '{wanted}'.")
            records = [r for r in records if r["streamType"].lower() == match.group(1).lower()]
        try:
            start = int(query.get("$skipToken") or 0)
        except ValueError:
            return _error(400, "BadRequest", "Invalid $skipToken.")
        page = records[start : start + self.stream_page_size]
        next_link = None
        if start + self.stream_page_size < len(records):
            link_query = f"api-version={API_VERSION}&$skipToken={start + self.stream_page_size}"
            if wanted:
                link_query += "&$filter=" + quote(wanted, safe="")
            next_link = f"{self.endpoint}{self._job_id(job['name'])}/streams?{link_query}"
        items = [
            {
                "id": f"{self._job_id(job['name'])}/streams/{r['jobStreamId']}",
                "properties": {
                    "jobStreamId": r["jobStreamId"],
                    "time": r["time"],
                    "streamType": r["streamType"],
                    "summary": r["summary"],
                    "streamText": None,
                    "value": {},
                },
            }
            for r in page
        ]
        return _json(200, {"value": items, "nextLink": next_link})

    def _one_stream(self, name: str, stream_id: str) -> Answer:
        job = self._find(name)
        if job is None:
            return self._job_not_found(name)
        record = next((r for r in self._records(job) if r["jobStreamId"] == stream_id), None)
        if record is None:
            return _error(404, "ResourceNotFound", f"The job stream '{stream_id}' was not found.")
        return _json(
            200,
            {
                "id": f"{self._job_id(job['name'])}/streams/{stream_id}",
                "properties": {**record, "value": {}},
            },
        )


# --- helpers -------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _path_and_query(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    return unquote(parts.path), query


def _split(request: Request) -> tuple[str, str, dict[str, str], bytes]:
    path, query = _path_and_query(request.path)
    return request.method, path, query, request.body


def _json(status: int, document: Any) -> Answer:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-correlation-request-id": str(uuid.uuid4()),
    }
    return status, headers, json.dumps(document).encode()


def _error(status: int, code: str, message: str) -> Answer:
    return _json(status, {"error": {"code": code, "message": message}})


def _unauthorized(code: str, message: str) -> Answer:
    status, headers, payload = _error(401, code, message)
    headers["WWW-Authenticate"] = (
        'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", '
        f'error_description="{message}"'
    )
    return status, headers, payload


def _not_allowed(method: str, path: str) -> Answer:
    return _error(405, "MethodNotAllowed", f"The method '{method}' is not allowed on '{path}'.")
