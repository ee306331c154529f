"""Launching an ad hoc backtest through Prefect's REST API, with plain httpx (no prefect import).

The deployment ``adhoc-backtest/adhoc-backtest`` is looked up by name (``GET /deployments/name/{flow}/
{deployment}``), then a run is created with ``POST /deployments/{id}/create_flow_run`` and the request's
parameters. Every failure (the server does not answer, the deployment is not registered, the server refuses
the parameters) comes back as a :class:`Launch` with ``ok=False`` and a message saying what happened; nothing
raises but a bad request, which is refused before any call with a ``DataError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def launch_backtest(api_url: str, request: AdhocRequest, timeout_s: float = 10.0,
                    flow: str = FLOW, deployment: str = DEPLOYMENT) -> Launch:
    """Create a run of the ad hoc backtest deployment at the Prefect server ``api_url`` (e.g.
    ``http://127.0.0.1:4200/api``)."""
    base = api_url.rstrip("/")
    where = f"{flow}/{deployment}"
    try:
        with httpx.Client(base_url=base, timeout=timeout_s) as client:
            found = client.get(f"/deployments/name/{quote(flow, safe='')}/{quote(deployment, safe='')}")
            if found.status_code == 404:
                return Launch(False, f"the Prefect server at {base} has no deployment {where}: "
                                     "start the flows' server (flows/serve.py) so it registers it")
            if found.status_code >= 400:
                return Launch(False, f"the Prefect server at {base} answered {found.status_code} when asked for "
                                     f"deployment {where}: {_detail(found)}")
            deployment_id = str(found.json()["id"])
            created = client.post(f"/deployments/{deployment_id}/create_flow_run",
                                  json={"parameters": request.parameters()})
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
    """Whether the Prefect server at ``api_url`` answers its health check."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.TransportError:
        return False


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
