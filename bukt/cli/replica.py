"""`bukt replica status` and `bukt promote` (docs/operations.md, "Read replicas")."""
import json
import os
import time

from bukt.cli.common import FAILED, OK, REFUSED, config_arg, emit, json_arg, load_config


def replica_args(p):
    p.add_argument("action", choices=["status"], help="status: primary, applied "
                   "sequence, lag in sequence positions and seconds")
    config_arg(p)
    json_arg(p)


def replica(args):
    import bukt
    from bukt.replica.status import replica_status
    cfg = load_config(args)
    store = bukt.attach(cfg.instance, readonly=True)
    try:
        st = replica_status(store)
    finally:
        store.close()
    emit(args, st, lambda: print("\n".join(f"{k:16} {v}" for k, v in st.items())))
    return OK if st["role"] == "primary" or st["link"] == "up" else FAILED


def promote_args(p):
    config_arg(p)
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the applier to stop (default 10)")


def promote(args):
    """Make this read replica a primary: its applier stops, its segment takes writes
    (its own writer logs them already), and the old primary is fenced if it answers."""
    import signal
    import bukt
    from bukt.replica import PROMOTED_FILE, write_json
    from bukt.replica.applier import parse_primary
    from bukt.replica.status import STATUS_FILE
    cfg = load_config(args)
    dd = os.path.abspath(cfg.data_dir)
    store = bukt.attach(cfg.instance)
    try:
        primary = store.replica_primary()
        if primary is None:
            print("this instance is a primary already")
            return REFUSED
        st = {}
        try:
            with open(os.path.join(dd, STATUS_FILE)) as f:
                st = json.load(f)
        except (OSError, ValueError):
            pass
        write_json(os.path.join(dd, PROMOTED_FILE),
                   {"ms": int(time.time() * 1000), "was_replica_of": primary,
                    "primary_node": st.get("primary_node"), "applied": st.get("applied")})
        pid = st.get("pid")
        deadline = time.monotonic() + args.wait
        sent = False
        while pid and _applier_alive(pid):
            if time.monotonic() > deadline and not sent:
                os.kill(pid, signal.SIGTERM)
                sent, deadline = True, time.monotonic() + 5
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        store.set_replica(None)
    finally:
        store.close()
    print(f"promoted: this instance takes writes now (it was a replica of {primary})")
    # the fencing rule: tell the old primary at once if it is there
    url = cfg.get("replica.of")
    if url:
        host, port, token = parse_primary(url)
        mhost, mport = cfg.get("http.bind").rsplit(":", 1)
        me = f"{'127.0.0.1' if mhost in ('0.0.0.0', '') else mhost}:{mport}"
        try:
            import http.client
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("POST", "/api/v1/replication/fence",
                         body=json.dumps({"by": me, "node": st.get("primary_node")}),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            conn.close()
            print(f"the old primary {host}:{port} is fenced (HTTP {r.status})"
                  if r.status == 200 else
                  f"the old primary {host}:{port} refused the fence (HTTP {r.status})")
        except OSError as e:
            print(f"the old primary {host}:{port} is unreachable ({e}): it fences itself "
                  "when it starts and finds this promotion")
    return OK


def _applier_alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"replica-follow" in f.read()
    except OSError:
        return False


def unfence_args(p):
    config_arg(p)


def unfence(args):
    """The operator's word: this fenced primary takes writes again."""
    import bukt
    from bukt.replica import FENCED_FILE, UNFENCED_FILE, fenced, read_json, write_json
    cfg = load_config(args)
    dd = os.path.abspath(cfg.data_dir)
    f = fenced(dd)
    if f is None:
        print("this instance is not fenced")
        return REFUSED
    doc = read_json(os.path.join(dd, UNFENCED_FILE)) or {"accepted": []}
    doc["accepted"] = sorted(set(doc.get("accepted", [])) | {f["by"]})
    doc["ms"] = int(time.time() * 1000)
    write_json(os.path.join(dd, UNFENCED_FILE), doc)
    os.unlink(os.path.join(dd, FENCED_FILE))
    try:
        store = bukt.attach(cfg.instance)
    except Exception:
        store = None
    if store is not None:
        try:
            store.set_replica(None)
        finally:
            store.close()
    print(f"unfenced: this instance takes writes again although {f['by']} was promoted "
          "in its place (the operator's decision)")
    return OK
