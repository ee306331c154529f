"""Talking to a Prefect server's REST API with plain httpx (no prefect import): its credential, its CSRF token, and
launching an ad hoc backtest.

:class:`PrefectAPI` is the one way tradeforge calls the server: it sends the operator credential (Prefect's API auth
string, as HTTP basic authentication) with every request and, when the server protects itself against cross-site
requests, a CSRF token with every change (fetched once from ``GET /csrf-token``, again when it expired), as Prefect's
own client does. A server without either answers as before.

The deployment ``adhoc-backtest/adhoc-backtest`` is looked up by name (``GET /deployments/name/{flow}/
{deployment}``), then a run is created with ``POST /deployments/{id}/create_flow_run`` and the request's
parameters. Every failure (the server does not answer, the deployment is not registered, the server refuses
the parameters) comes back as a :class:`Launch` with ``ok=False`` and a message saying what happened; nothing
raises but a bad request, which is refused before any call with a ``DataError`` naming the field.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.backtest.adhoc import AdhocRequest

FLOW = "adhoc-backtest"
DEPLOYMENT = "adhoc-backtest"


@dataclass(frozen=True)
class Launch:
    """The outcome of a launch: the created flow run, or why there is none."""

    ok: bool
    message: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment_id: str | None = None


class PrefectAPI:
    """A client of one Prefect server's REST API at ``api_url`` (e.g. ``http://127.0.0.1:4200/api``), sending
    ``auth`` (the API auth string) when given and a CSRF token with every change when the server asks for one.

    Never through a proxy of the environment (``HTTP_PROXY``…): the credential goes to the server only. Transport
    errors (``httpx.TransportError``) reach the caller.
    """

    CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, api_url: str, auth: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
        self.base = api_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base, timeout=timeout_s, headers=headers, trust_env=False)
        self._csrf: dict[str, str] | None = None
        self._client_id = str(uuid.uuid4())

    def __enter__(self) -> PrefectAPI:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: str) -> httpx.Response:
        return self._client.get(path, params=params or None)

    def post(self, path: str, json: Any) -> httpx.Response:
        return self.request("POST", path, json)

    def request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """Send one request; a change carries the CSRF token (fetched again once when the server refuses it)."""
        if method.upper() not in self.CHANGES:
            return self._client.request(method, path, json=json)
        answer = self._client.request(method, path, json=json, headers=self._csrf_headers())
        if answer.status_code == 403 and "Invalid CSRF token" in answer.text:  # expired: ask for a new one
            self._csrf = None
            answer = self._client.request(method, path, json=json, headers=self._csrf_headers())
        return answer

    def _csrf_headers(self) -> dict[str, str]:
        if self._csrf is None:
            answer = self._client.get("/csrf-token", params={"client": self._client_id})
            if answer.status_code == 200:
                self._csrf = {"Prefect-Csrf-Token": str(answer.json()["token"]), "Prefect-Csrf-Client": self._client_id}
            elif answer.status_code in (404, 422):  # an older server, or CSRF protection off: no token needed
                self._csrf = {}
            else:  # e.g. 401: the change request gets the same answer, which the caller reports
                return {}
        return self._csrf


def launch_backtest(api_url: str, request: AdhocRequest, timeout_s: float = 10.0,
                    flow: str = FLOW, deployment: str = DEPLOYMENT, auth: str | None = None) -> Launch:
    """Create a run of the ad hoc backtest deployment at the Prefect server ``api_url`` (e.g.
    ``http://127.0.0.1:4200/api``), with the API auth string ``auth`` when the server requires one."""
    base = api_url.rstrip("/")
    where = f"{flow}/{deployment}"
    try:
        with PrefectAPI(base, auth, timeout_s) as client:
            found = client.get(f"/deployments/name/{quote(flow, safe='')}/{quote(deployment, safe='')}")
            if found.status_code == 401:
                return Launch(False, f"the Prefect server at {base} answered 401 Unauthorized: it needs the operator "
                                     "credential it was started with (TRADEFORGE_DASHBOARD_PASSWORD when set, else "
                                     "<data_dir>/run/operator-credential written by `tradeforge up`)")
            if found.status_code == 404:
                return Launch(False, f"the Prefect server at {base} has no deployment {where}: "
                                     "start the flows' server (flows/serve.py) so it registers it")
            if found.status_code >= 400:
                return Launch(False, f"the Prefect server at {base} answered {found.status_code} when asked for "
                                     f"deployment {where}: {_detail(found)}")
            deployment_id = str(found.json()["id"])
            created = client.post(f"/deployments/{deployment_id}/create_flow_run",
                                  {"parameters": request.parameters()})
            if created.status_code >= 400:
                return Launch(False, f"the Prefect server refused the run of {where} ({created.status_code}): "
                                     f"{_detail(created)}", deployment_id=deployment_id)
            run = created.json()
    except httpx.TransportError as exc:
        return Launch(False, f"the Prefect server at {base} does not answer ({type(exc).__name__}: {exc}); "
                             "start it with `prefect server start --host 127.0.0.1`")
    except (ValueError, KeyError) as exc:
        return Launch(False, f"the Prefect server at {base} sent an answer that is not a Prefect API answer: {exc}")
    return Launch(True, f"flow run {run.get('name', '')} created for {where}", flow_run_id=str(run["id"]),
                  flow_run_name=str(run.get("name", "")), deployment_id=deployment_id)


def server_answers(api_url: str, timeout_s: float = 2.0) -> bool:
    """Whether the Prefect server at ``api_url`` answers its health check (which needs no credential)."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def deployment_names(api_url: str, auth: str | None = None, timeout_s: float = 2.0) -> list[str] | None:
    """The names of the deployments the server at ``api_url`` holds (up to 200); None when it does not answer
    or refuses."""
    try:
        with PrefectAPI(api_url, auth, timeout_s) as client:
            answer = client.post("/deployments/filter", {"limit": 200})
            if answer.status_code != 200:
                return None
            return [str(item["name"]) for item in answer.json()]
    except (httpx.TransportError, ValueError, KeyError, TypeError):
        return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
