"""Azure Automation over ARM REST: start a runbook job on a Hybrid Runbook Worker group and read it back.

The calls (api-version 2024-10-23, the newest stable; the job contract is the one exchange-azure-facts §3.2
gives for 2023-11-01), all under the Automation account's
resource id on the ARM endpoint, with a bearer token for `<endpoint>/.default` from the Function's
managed identity:

    PUT  .../jobs/{jobName}                 start (body: runbook name, parameters as JSON string literals, runOn)
    GET  .../jobs/{jobName}                 status, statusDetails, exception, start/end times
    GET  .../jobs/{jobName}/output          the Output stream as text
    GET  .../jobs/{jobName}/streams?$filter=properties/streamType eq 'Error'   (paged), then each record
    POST .../jobs/{jobName}/stop

The job name is chosen by us and deterministic (`job_name`: the certsync job id as a GUID), and
`start_job` reads before it writes: an existing job is returned, never started twice. ARM's answer to
a second PUT of the same name is not documented; a 409 (or a 200) there means another caller won the
race, and the existing job is read and returned.

No retries here: azure-core's retry policy is off. Retrying with backoff is the caller's job (it puts
the queue message back with a visibility delay), so every failure is an `AutomationError` that says
whether it is `transient` (429, 5xx, 408, connection failures and timeouts; with the server's
`retry_after` when it sent one) or permanent (other 4xx, with what to do: a role to grant, a runbook
to publish, a worker group to create, a setting to fix). Messages are one line and never carry the
token or the job parameters.

The port this implements (`Automation`, `AutomationJob`, `AutomationError`, `job_name`, `TERMINAL`) lives in
`shared.remediation.automation`. azure.core (and azure.identity, for the default credential) is imported when
a client is made, not when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from shared.errors import CertsyncError
from shared.remediation.automation import AutomationError, AutomationJob
from shared.times import retry_after_seconds

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.rest import HttpRequest, HttpResponse

log = logging.getLogger("certsync.automation")

API_VERSION = "2024-10-23"
DEFAULT_ENDPOINT = "https://management.azure.com"
ROLE_HINT = "grant the Function's managed identity the Automation Job Operator role on the Automation account"

_ACCOUNT_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/resourceGroups/(?P<resource_group>[-\w.()]{1,90})"
    r"/providers/Microsoft\.Automation/automationAccounts/(?P<account>[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9])$",
    re.IGNORECASE,
)
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")
_MAX_PAGES = 50
_MAX_RECORD_FETCHES = 50
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class AccountId:
    """The parts of an Automation account's ARM resource id."""

    subscription: str
    resource_group: str
    account: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Automation/automationAccounts/{self.account}"
        )


def parse_account_id(value: str, setting: str = "AUTOMATION_ACCOUNT_ID") -> AccountId:
    """Check an Automation account resource id; the error names `setting`."""
    match = _ACCOUNT_ID.match((value or "").strip().rstrip("/"))
    if match is None:
        raise CertsyncError(
            f"{setting} {value!r} is not an Automation account resource id; set it to /subscriptions/<subscription "
            "GUID>/resourceGroups/<group>/providers/Microsoft.Automation/automationAccounts/<account>"
        )
    return AccountId(match["subscription"], match["resource_group"], match["account"])


def check_endpoint(endpoint: str, setting: str = "CERTSYNC_ARM_ENDPOINT") -> str:
    parts = urlsplit((endpoint or "").strip())
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
        raise CertsyncError(
            f"{setting} {endpoint!r} is not an ARM endpoint; give https://<host> without a path "
            f"(default {DEFAULT_ENDPOINT})"
        )
    return f"https://{parts.netloc}"


class AutomationClient:
    """Jobs of one Automation account. Thread-safe; one HTTPS session, no retries (see the module)."""

    def __init__(
        self,
        account_id: str,
        credential: TokenCredential | None = None,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 30.0,
        client_id: str = "",
        **client_kwargs: Any,
    ) -> None:
        self.account = parse_account_id(account_id)
        self.account_id = self.account.resource_id
        self.endpoint = check_endpoint(endpoint)

        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            RequestIdPolicy,
            RetryPolicy,
            UserAgentPolicy,
        )
        from azure.core.pipeline.transport import RequestsTransport

        if credential is None:
            from shared.adapters.azure.keyvault import default_credential

            credential = default_credential(client_id)  # AZURE_CLIENT_ID's identity, when given
        self.scope = f"{self.endpoint}/.default"
        transport = client_kwargs.pop("transport", None) or RequestsTransport(
            connection_timeout=timeout, read_timeout=timeout, **client_kwargs
        )
        policies = [
            RequestIdPolicy(),  # x-ms-client-request-id: a fresh id per request, for support cases
            UserAgentPolicy(sdk_moniker="certsync-automation"),
            RetryPolicy(retry_total=0),  # the caller retries, with a queue visibility delay
            BearerTokenCredentialPolicy(credential, self.scope),
        ]
        self._client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            self.endpoint, policies=policies, transport=transport
        )

    # lifecycle

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AutomationClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # jobs

    def start_job(self, name: str, runbook: str, parameters: Mapping[str, str], run_on: str) -> AutomationJob:
        """Start runbook `runbook` as job `name` on hybrid worker group `run_on`, unless job `name`
        exists already: then that job is returned (`created=False`). Never starts a second job."""
        _check_job_name(name)
        if not runbook:
            raise AutomationError(f"no runbook given for Automation job {name}; set AUTOMATION_RUNBOOK", code="Input")
        if not run_on:
            # ARM would run an empty runOn in the Azure sandbox, where there is no Exchange.
            raise AutomationError(
                f"no hybrid worker group for Automation job {name}; set worker_group in the targets", code="Input"
            )
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()):
            raise AutomationError(
                f"Automation job {name}: parameters must all be strings (serialise structures as JSON)",
                code="Input",
            )
        existing = self._find_job(name)
        if existing is not None:
            log.info("Automation job %s exists already (%s); not starting it again", name, existing.status)
            return existing
        # Automation decodes every parameter value as JSON before binding it (a JSON object reaches a [string]
        # parameter as an object): each value goes as a JSON string literal, which decodes to exactly itself.
        sent = {key: json.dumps(value) for key, value in parameters.items()}
        body = {"properties": {"runbook": {"name": runbook}, "parameters": sent, "runOn": run_on}}
        context = _Context(self, f"start Automation job {name}", job=name, runbook=runbook, run_on=run_on)
        response = self._send(
            "PUT",
            self._job_path(name),
            context,
            json=body,
            ok=(200, 201, 409),
            secrets={**{f"{k} as sent": v for k, v in sent.items()}, **parameters},
        )
        if response.status_code == 409:
            log.info("Automation job %s was created by another caller meanwhile; reading it", name)
            found = self._find_job(name)
            if found is None:
                raise AutomationError(
                    f"Automation account {self.account.account}: job {name} conflicted on create but cannot be read; "
                    "will retry",
                    status=409,
                    code="Conflict",
                    transient=True,
                )
            return found
        job = _job(_json(response, context), name, created=response.status_code == 201)
        log.info("Automation job %s %s: runbook %s on %s", name, "started" if job.created else "found", runbook, run_on)
        return job

    def get_job(self, name: str) -> AutomationJob:
        """The job's current state; a job that does not exist is a permanent `AutomationError` (404)."""
        _check_job_name(name)
        context = _Context(self, f"read Automation job {name}", job=name)
        return _job(_json(self._send("GET", self._job_path(name), context), context), name)

    def output(self, name: str) -> str:
        """The job's Output stream as text (the runbook's result is its last line)."""
        _check_job_name(name)
        context = _Context(self, f"read the output of Automation job {name}", job=name)
        response = self._send("GET", self._job_path(name) + "/output", context, accept="text/plain")
        return response.text()

    def error_streams(self, name: str) -> list[str]:
        """The texts of the job's Error stream records, in order (every page; each record fetched when
        the list carries only its summary)."""
        _check_job_name(name)
        return list(self._stream_texts(name, "Error"))

    def stop_job(self, name: str) -> None:
        """Ask Automation to stop the job (it passes through Stopping to Stopped)."""
        _check_job_name(name)
        context = _Context(self, f"stop Automation job {name}", job=name)
        self._send("POST", self._job_path(name) + "/stop", context)

    def read(self, path: str, what: str, api_version: str = API_VERSION) -> dict[str, Any] | None:
        """GET the ARM resource at `path` (a resource id, or one under the account) for `certsync doctor
        --deployment`: its JSON, or None when ARM answers 404. `what` names it in errors."""
        context = _Context(self, f"read {what}")
        separator = "&" if "?" in path else "?"
        url = f"{path}{separator}api-version={quote(api_version, safe='')}"
        response = self._send("GET", url, context, ok=(200, 404))
        if response.status_code == 404:
            return None
        return _json(response, context)

    # internals

    def _job_path(self, name: str) -> str:
        return f"{self.account_id}/jobs/{quote(name, safe='')}"

    def _find_job(self, name: str) -> AutomationJob | None:
        context = _Context(self, f"read Automation job {name}", job=name)
        response = self._send("GET", self._job_path(name), context, ok=(200, 404))
        if response.status_code == 404:
            # A 404 naming the account, group or subscription is not "no such job yet": say so now.
            code, message = _arm_error(response)
            if _names_account(code, message):
                raise context.error(response, code, message)
            return None
        return _job(_json(response, context), name)

    def _stream_texts(self, name: str, stream_type: str) -> Iterator[str]:
        context = _Context(self, f"read the {stream_type} streams of Automation job {name}", job=name)
        url: str | None = self._job_path(name) + "/streams"
        params: dict[str, str] | None = {"$filter": f"properties/streamType eq '{stream_type}'"}
        fetched = 0
        for _ in range(_MAX_PAGES):
            if url is None:
                return
            response = self._send("GET", url, context, params=params)
            page = _json(response, context)
            for item in page.get("value") or []:
                properties = item.get("properties") or item  # tolerate a flattened record
                if str(properties.get("streamType") or stream_type).lower() != stream_type.lower():
                    continue
                text = properties.get("streamText")
                stream_id = properties.get("jobStreamId")
                if text is None and stream_id and fetched < _MAX_RECORD_FETCHES:
                    fetched += 1
                    text = self._stream_record(name, str(stream_id)).get("streamText")
                if text is None:
                    text = properties.get("summary")
                if text:
                    yield str(text)
            url = self._same_origin(page.get("nextLink"), context)
            params = None  # the nextLink carries the query
        log.warning("Automation job %s: stopped reading %s streams after %d pages", name, stream_type, _MAX_PAGES)

    def _stream_record(self, name: str, stream_id: str) -> Mapping[str, Any]:
        context = _Context(self, f"read a stream record of Automation job {name}", job=name)
        path = f"{self._job_path(name)}/streams/{quote(stream_id, safe='')}"
        return _json(self._send("GET", path, context), context).get("properties") or {}

    def _same_origin(self, link: object, context: _Context) -> str | None:
        """A nextLink is followed only on our own endpoint: the bearer token goes nowhere else."""
        if not link:
            return None
        parts = urlsplit(str(link))
        if f"{parts.scheme}://{parts.netloc}".lower() != self.endpoint.lower():
            raise AutomationError(
                f"Automation account {self.account.account}: {context.action} got a nextLink to another host "
                f"({parts.netloc}); not following it",
                code="ForeignNextLink",
            )
        return str(link)

    def _send(
        self,
        method: str,
        path_or_url: str,
        context: _Context,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        accept: str = "application/json",
        ok: tuple[int, ...] = (200,),
        secrets: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.core.rest import HttpRequest

        url = path_or_url if path_or_url.startswith("https://") else self.endpoint + path_or_url
        query: dict[str, str] = {}
        if "api-version=" not in url:  # a nextLink carries its own query, api-version included
            query = {"api-version": API_VERSION, **(params or {})}
        request = HttpRequest(method, url, params=query or None, json=json, headers={"Accept": accept})
        try:
            response = self._client.send_request(request)
            response.read()
        except ClientAuthenticationError as exc:  # the credential could not get a token
            raise AutomationError(
                f"Automation account {self.account.account}: {context.action} failed: no ARM token for "
                f"{self.scope} ({type(exc).__name__}); check the Function's managed identity and AZURE_CLIENT_ID",
                code="CredentialUnavailable",
                transient=True,
            ) from None
        except ServiceResponseError as exc:  # sent, but no (complete) answer: timeouts, resets
            raise AutomationError(
                f"Automation account {self.account.account}: {context.action} failed: no answer from "
                f"{self.endpoint} ({_reason(exc)}); will retry",
                code="Timeout",
                transient=True,
            ) from None
        except (ServiceRequestError, OSError) as exc:  # never sent: DNS, refused, TLS, a bad CA file
            raise AutomationError(
                f"Automation account {self.account.account}: {context.action} failed: cannot reach "
                f"{self.endpoint} ({_reason(exc)}); will retry",
                code="ConnectionError",
                transient=True,
            ) from None
        if response.status_code in ok:
            return response
        code, message = _arm_error(response)
        raise context.error(response, code, message, secrets=secrets)


@dataclass(frozen=True)
class _Context:
    """What a request was for, to turn an ARM error into an actionable message."""

    client: AutomationClient
    action: str
    job: str = ""
    runbook: str = ""
    run_on: str = ""

    def error(
        self, response: HttpResponse, code: str, message: str, *, secrets: Mapping[str, str] | None = None
    ) -> AutomationError:
        status = response.status_code
        account = self.client.account.account
        transient = status in (408, 429) or status >= 500
        retry_after = _retry_after(response.headers)
        said = _clean(message, secrets)
        what = f"HTTP {status}" + (f" {code}" if code else "") + (f": {said}" if said else "")
        if transient:
            when = f" after {retry_after:g}s" if retry_after is not None else ""
            hint = f"will retry{when}"
        else:
            hint = self._hint(status, code, message)
        return AutomationError(
            f"Automation account {account}: {self.action} failed: {what}; {hint}",
            status=status,
            code=code,
            transient=transient,
            retry_after=retry_after,
        )

    def _hint(self, status: int, code: str, message: str) -> str:
        lowered = message.lower()
        if status == 401:
            return f"the ARM token was refused: check AZURE_CLIENT_ID and CERTSYNC_ARM_ENDPOINT, and {ROLE_HINT}"
        if status == 403:
            return ROLE_HINT
        if status == 404:
            if self.runbook and "runbook" in lowered:
                return f"publish runbook {self.runbook} in Automation account {self.client.account.account}"
            if _names_account(code, message):
                return "check AUTOMATION_ACCOUNT_ID (subscription, resource group and account name)"
            if self.job:
                return (
                    f"job {self.job} does not exist in this account (Automation keeps jobs 30 days); "
                    "check AUTOMATION_ACCOUNT_ID"
                )
            return "check AUTOMATION_ACCOUNT_ID"
        if status == 400:
            if "api-version" in lowered or code in ("InvalidApiVersionParameter", "NoRegisteredProviderFound"):
                return f"the endpoint does not serve api-version {API_VERSION}; check CERTSYNC_ARM_ENDPOINT"
            if self.run_on and ("runon" in lowered or "worker group" in lowered or "hybrid" in lowered):
                return f"create hybrid worker group {self.run_on} or fix worker_group in the targets"
        return "the request was refused; see the Automation account's activity log"


# --- helpers -------------------------------------------------------------------------------------


def _job(resource: Mapping[str, Any], name: str, *, created: bool = False) -> AutomationJob:
    """The job an ARM job resource describes."""
    properties = resource.get("properties") or {}
    runbook = properties.get("runbook") or {}
    return AutomationJob(
        name=str(resource.get("name") or name),
        job_id=str(properties.get("jobId") or ""),
        status=str(properties.get("status") or ""),
        status_details=str(properties.get("statusDetails") or ""),
        exception=properties.get("exception") or None,
        run_on=str(properties.get("runOn") or ""),
        runbook=str(runbook.get("name") or "") if isinstance(runbook, Mapping) else "",
        start_time=properties.get("startTime") or None,
        end_time=properties.get("endTime") or None,
        created=created,
    )


def _check_job_name(name: str) -> None:
    if not isinstance(name, str) or not _JOB_NAME.match(name):
        raise AutomationError(f"{name!r} is not an Automation job name (use job_name(job_id))", code="Input")


def _json(response: HttpResponse, context: _Context) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise AutomationError(
            f"Automation account {context.client.account.account}: {context.action}: HTTP "
            f"{response.status_code} answer is not a JSON object; will retry",
            status=response.status_code,
            code="InvalidResponse",
            transient=True,
        )
    return document


def _arm_error(response: HttpResponse) -> tuple[str, str]:
    """ARM's `{"error": {"code", "message"}}` (or a bare `{"code", "message"}`); ("", "") otherwise."""
    try:
        document = response.json()
    except ValueError:
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    error = document["error"] if isinstance(document.get("error"), dict) else document
    return str(error.get("code") or ""), str(error.get("message") or "")


def _names_account(code: str, message: str) -> bool:
    """Whether a 404 is about the account (or its group or subscription), not a job in it."""
    if code in ("SubscriptionNotFound", "ResourceGroupNotFound", "ParentResourceNotFound"):
        return True
    return "microsoft.automation/automationaccounts/" in message.lower() and "/jobs" not in message.lower()


def _clean(message: str, secrets: Mapping[str, str] | None) -> str:
    """ARM's message on one line, short, with the job parameters' values and anything token-like cut."""
    text = " ".join(message.split()).rstrip(".")
    for value in (secrets or {}).values():
        if len(value) >= 4:
            text = text.replace(value, "<parameter>")
    text = _JWT.sub("<token>", text)
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`/`x-ms-retry-after-ms` (Azure's) or `Retry-After` (seconds or
    an HTTP date); None when absent or unreadable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        try:
            return max(0.0, float(lowered[name]) / 1000)
        except (KeyError, ValueError):
            pass
    return retry_after_seconds(lowered.get("retry-after"), dt.datetime.now(dt.timezone.utc))


def _reason(exc: BaseException) -> str:
    """Why a connection failed, briefly ("Connection refused", "timed out", a TLS error): the innermost
    OS or TLS error's text, else the innermost exception's class name; never a URL or a body."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    reason = type(exc).__name__
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return f"TLS: {current.reason or current.strerror or type(current).__name__}"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if isinstance(current, TimeoutError) or "timeout" in type(current).__name__.lower():
            reason = "timed out"
        else:
            reason = type(current).__name__
        pending += [
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
    return reason
