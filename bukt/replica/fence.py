"""Promotion and the fencing rule (docs/design.md, "Replicas", Promotion).

THE RULE. A primary whose data a promoted replica has taken over refuses every write
(its segment's replica word names the promoted one) until an operator runs `bukt
unfence` on it. It learns of the promotion two ways:
  - at once, when `bukt promote` reaches it (POST /api/v1/replication/fence);
  - at its writer's start, by asking each replica it has served (replicas.json)
    GET /api/v1/replication/role: one that answers it was promoted from this data
    directory's node id fences it.
A replica that cannot be reached at start cannot say so: the primary starts
unfenced and logs that it could not ask, which is the window this rule leaves open.
"""
import http.client
import json
import logging
import os
import time

from bukt.replica import (FENCED_FILE, REPLICAS_FILE, UNFENCED_FILE, node_id, read_json,
                          write_json)

log = logging.getLogger("bukt.replica")

ASK_TIMEOUT_S = 1.0


def role_of(address, timeout=ASK_TIMEOUT_S):
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/api/v1/replication/role")
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return None
        return json.loads(body)
    finally:
        conn.close()


def fence(data_dir, by, store=None):
    """Fence this data directory in favour of `by` (host:port), and its segment now."""
    write_json(os.path.join(data_dir, FENCED_FILE), {"ms": int(time.time() * 1000),
                                                     "by": by})
    if store is not None:
        store.set_replica(by)
    log.error("fenced: a replica was promoted in this primary's place (%s); writes are "
              "refused until `bukt unfence`", by)


def check_at_start(data_dir):
    """The fencing rule's start check: ask every replica this primary served."""
    known = read_json(os.path.join(data_dir, REPLICAS_FILE)) or {}
    if not known or read_json(os.path.join(data_dir, FENCED_FILE)):
        return
    me = node_id(data_dir)
    accepted = set((read_json(os.path.join(data_dir, UNFENCED_FILE)) or {})
                   .get("accepted", []))
    for address in known:
        if address in accepted:
            continue
        try:
            role = role_of(address)
        except (OSError, http.client.HTTPException, ValueError) as e:
            log.warning("could not ask replica %s whether it was promoted (%s): "
                        "starting unfenced", address, e)
            continue
        p = (role or {}).get("promoted")
        if p and p.get("primary_node") == me:
            fence(data_dir, address)
            return
