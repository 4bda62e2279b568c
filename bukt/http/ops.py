"""For operators: /healthz and /api/v1/openapi.json (/metrics is bukt/http/metrics.py)."""

import json

from bukt.errors import BuktError
from bukt.http.ringwait import writer_state


class Health:
    """200 when the segment answers and the writer (if it reports) is alive and
    flushing; 503 with the reason otherwise. No token needed, never rate limited."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        body = {"status": "ok", "segment": "attached", "writer": "not reported"}
        try:
            stats = self.ctx.store.stats()
        except BuktError as e:
            body.update(status="unavailable", segment="unavailable",
                        reason=f"segment: {e}")
        else:
            state = writer_state(self.ctx.store)
            if state is not None:
                body["writer"] = state
                if not (state.get("alive") and state.get("flushing")):
                    body.update(status="unavailable",
                                reason=f"writer: {state.get('reason') or 'not flushing'}")
            # stripes a dead process left mid-write: their read-only readers wait until
            # the writer's repair pass (every repair.interval) or a write repairs them
            awaiting = stats.get("stripes_awaiting_repair", 0)
            body["stripes_awaiting_repair"] = awaiting
            if awaiting and body["status"] == "ok":
                body.update(status="unavailable",
                            reason=f"{awaiting} stripe(s) left mid-write await repair")
        s = self.ctx.settings
        restarts = self.ctx.metrics.area.restarts(s.workers)
        body["http_workers"] = {"workers": s.workers, "restarts_last_minute": restarts}
        if restarts >= s.max_worker_restarts:
            why = (f"http workers: {restarts} died and were restarted in the last minute "
                   f"(http.max_worker_restarts {s.max_worker_restarts}): a crash loop; "
                   "see the server's log")
            body.update(status="unavailable",
                        reason=f"{body['reason']}; {why}" if body.get("reason") else why)
        resp.status = 200 if body["status"] == "ok" else 503
        resp.set_header("Cache-Control", "no-store")
        resp.media = body

    # HEAD: the GET's status and headers (a load balancer's check); falcon sends no body
    on_head = on_get


class OpenApi:
    def __init__(self, document):
        self.body = json.dumps(document).encode()

    async def on_get(self, req, resp):
        resp.content_type = "application/json"
        resp.data = self.body
